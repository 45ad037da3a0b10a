//! Loopback relays that can be cut: after `cut()` they keep every socket open but forward
//! nothing, which is what a peer that vanished (cable pulled, NAT dropped the mapping) looks
//! like to the server: no FIN, no RST, no CONNECTION_CLOSE.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};
use tokio_util::sync::CancellationToken;

pub struct Relay {
    pub addr: SocketAddr,
    cut: CancellationToken,
}

impl Relay {
    pub fn cut(&self) {
        self.cut.cancel();
    }

    pub async fn tcp(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = TcpStream::connect(target).await.unwrap();
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pump(cr, uw, token.clone()));
                tokio::spawn(pump(ur, cw, token.clone()));
            }
        });
        Relay { addr, cut }
    }

    pub async fn udp(target: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(target).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = CancellationToken::new();
        let token = cut.clone();
        tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    _ = token.cancelled() => {
                        // Hold both sockets, forward nothing, forever.
                        let _keep = (&front, &back);
                        std::future::pending::<()>().await;
                    }
                    r = front.recv_from(&mut a) => if let Ok((n, from)) = r {
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                    },
                    r = back.recv(&mut b) => if let (Ok(n), Some(to)) = (r, client) {
                        let _ = front.send_to(&b[..n], to).await;
                    },
                }
            }
        });
        Relay { addr, cut }
    }
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    cut: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = cut.cancelled() => {
                let _keep = (&r, &w);
                std::future::pending::<()>().await;
            }
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if w.write_all(&buf[..n]).await.is_err() { return },
            },
        }
    }
}
