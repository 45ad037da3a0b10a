//! A userspace UDP impairment relay: loss, delay, jitter, reordering and duplication, seeded so
//! a run repeats, plus `rebind`, which moves the relay's upstream side to a new source port the
//! way a NAT rebinding (or a phone going from Wi-Fi to cellular) does. The kernels this runs on
//! have no netem, so tests and benchmarks impair QUIC here instead. One source for both: the
//! integration tests include this file with `#[path]`.
//!
//! Each client address gets its own upstream socket, so the server sees one flow per client
//! (as behind a NAT). Every packet's fate is drawn in arrival order from one seeded generator.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{net::UdpSocket, task::AbortHandle};

/// What happens to every packet, in each direction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// One-way delay; the round trip through the relay adds twice this.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per packet (which reorders packets too).
    pub jitter: Duration,
    /// Probability that a packet is held back by one more `delay` (at least 5 ms), so later
    /// packets overtake it.
    pub reorder: f64,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
    pub seed: u64,
}

/// Packets seen, dropped and duplicated, both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub forwarded: u64,
    pub dropped: u64,
    pub duplicated: u64,
}

pub struct ImpairRelay {
    /// Where clients send: the relay's front socket.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    front_task: AbortHandle,
}

struct Inner {
    front: Arc<UdpSocket>,
    target: SocketAddr,
    impairment: Impairment,
    rng: Mutex<StdRng>,
    flows: Mutex<HashMap<SocketAddr, Flow>>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
}

/// One client's upstream socket and the task that carries the server's answers back.
struct Flow {
    up: Arc<UdpSocket>,
    reader: AbortHandle,
}

impl ImpairRelay {
    /// A relay on an ephemeral loopback port in front of `target`.
    pub async fn start(target: SocketAddr, impairment: Impairment) -> io::Result<ImpairRelay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let inner = Arc::new(Inner {
            front,
            target,
            impairment,
            rng: Mutex::new(StdRng::seed_from_u64(impairment.seed)),
            flows: Mutex::new(HashMap::new()),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
        });
        let front_task = tokio::spawn(front_loop(inner.clone())).abort_handle();
        Ok(ImpairRelay { addr, inner, front_task })
    }

    /// Gives every client a new upstream socket (a new source port toward the server). Packets
    /// the server sends to the old port are lost, as after a real rebinding.
    pub async fn rebind(&self) -> io::Result<()> {
        let clients: Vec<SocketAddr> = self.inner.flows().keys().copied().collect();
        for client in clients {
            let flow = open_flow(&self.inner, client).await?;
            if let Some(old) = self.inner.flows().insert(client, flow) {
                old.reader.abort();
            }
        }
        Ok(())
    }

    /// The source ports the server currently sees, one per client.
    pub fn upstream_ports(&self) -> Vec<u16> {
        let flows = self.inner.flows();
        flows.values().filter_map(|f| f.up.local_addr().ok()).map(|a| a.port()).collect()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            forwarded: self.inner.forwarded.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            duplicated: self.inner.duplicated.load(Ordering::Relaxed),
        }
    }
}

impl Drop for ImpairRelay {
    fn drop(&mut self) {
        self.front_task.abort();
        for flow in self.inner.flows().values() {
            flow.reader.abort();
        }
    }
}

impl Inner {
    fn flows(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Flow>> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Draws the packet's fate and sends its copies, each after its own delay.
    fn forward(&self, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, packet: &[u8]) {
        let delays = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            let i = &self.impairment;
            if rng.random_bool(i.loss.clamp(0.0, 1.0)) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let copies = if rng.random_bool(i.duplicate.clamp(0.0, 1.0)) { 2 } else { 1 };
            let mut delays = Vec::with_capacity(copies);
            for _ in 0..copies {
                let mut d = i.delay;
                if !i.jitter.is_zero() {
                    d += i.jitter.mul_f64(rng.random::<f64>());
                }
                if rng.random_bool(i.reorder.clamp(0.0, 1.0)) {
                    d += i.delay.max(Duration::from_millis(5));
                }
                delays.push(d);
            }
            delays
        };
        if delays.len() > 1 {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        for delay in delays {
            let socket = socket.clone();
            let packet = packet.to_vec();
            let send = async move {
                let _ = match to {
                    Some(to) => socket.send_to(&packet, to).await,
                    None => socket.send(&packet).await,
                };
            };
            if delay.is_zero() {
                tokio::spawn(send);
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    send.await;
                });
            }
        }
    }
}

async fn open_flow(inner: &Arc<Inner>, client: SocketAddr) -> io::Result<Flow> {
    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    up.connect(inner.target).await?;
    let reader = tokio::spawn(back_loop(inner.clone(), up.clone(), client)).abort_handle();
    Ok(Flow { up, reader })
}

/// Client → server.
async fn front_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = inner.front.recv_from(&mut buf).await else { continue };
        let existing = inner.flows().get(&client).map(|f| f.up.clone());
        let up = match existing {
            Some(up) => up,
            None => match open_flow(&inner, client).await {
                Ok(flow) => {
                    let up = flow.up.clone();
                    inner.flows().insert(client, flow);
                    up
                }
                Err(_) => continue,
            },
        };
        inner.forward(&up, None, &buf[..n]);
    }
}

/// Server → one client.
async fn back_loop(inner: Arc<Inner>, up: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match up.recv(&mut buf).await {
            Ok(n) => {
                let front = inner.front.clone();
                inner.forward(&front, Some(client), &buf[..n]);
            }
            // ICMP port unreachable surfaces as an error on a connected socket (the server is
            // restarting, say): keep the flow, without spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}
