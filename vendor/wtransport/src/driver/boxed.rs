//! tokio's bounded mpsc channel carrying boxed values (rtgate patch).
//!
//! A tokio channel allocates its first block of 32 slots when it is created, whatever its
//! capacity. The driver opens nine channels per connection, most of which never carry a
//! value (an idle session gets no new streams), and their slots held ~28 KB per idle session.
//! Boxing the values shrinks each slot to a pointer; a value that is sent pays one small
//! allocation. The API mirrors the subset of `tokio::sync::mpsc` the driver uses, errors
//! included, so call sites are unchanged.

use std::fmt;
use tokio::sync::mpsc as tokio_mpsc;

pub use tokio::sync::mpsc::error;

pub struct Sender<T>(tokio_mpsc::Sender<Box<T>>);

pub struct Receiver<T>(tokio_mpsc::Receiver<Box<T>>);

pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio_mpsc::channel(capacity);
    (Sender(tx), Receiver(rx))
}

impl<T> Sender<T> {
    pub async fn send(&self, value: T) -> Result<(), error::SendError<T>> {
        self.0
            .send(Box::new(value))
            .await
            .map_err(|error::SendError(value)| error::SendError(*value))
    }

    pub fn try_send(&self, value: T) -> Result<(), error::TrySendError<T>> {
        self.0.try_send(Box::new(value)).map_err(|e| match e {
            error::TrySendError::Full(value) => error::TrySendError::Full(*value),
            error::TrySendError::Closed(value) => error::TrySendError::Closed(*value),
        })
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    pub async fn reserve(&self) -> Result<Permit<'_, T>, error::SendError<()>> {
        self.0.reserve().await.map(Permit)
    }

    pub async fn reserve_owned(self) -> Result<OwnedPermit<T>, error::SendError<()>> {
        self.0.reserve_owned().await.map(OwnedPermit)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

pub struct Permit<'a, T>(tokio_mpsc::Permit<'a, Box<T>>);

impl<T> Permit<'_, T> {
    pub fn send(self, value: T) {
        self.0.send(Box::new(value));
    }
}

pub struct OwnedPermit<T>(tokio_mpsc::OwnedPermit<Box<T>>);

impl<T> OwnedPermit<T> {
    pub fn send(self, value: T) -> Sender<T> {
        Sender(self.0.send(Box::new(value)))
    }
}

impl<T> Receiver<T> {
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.map(|value| *value)
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
