//! The one UDP port every WebRTC viewer's media goes through, and the demultiplexer that
//! hands each datagram to its viewer.
//!
//! The socket is bound to every IPv4 interface at once, so each datagram's own destination
//! address (`IP_PKTINFO`) is read with it: ICE needs to know which of the box's addresses
//! a browser reached, and replies leave from that same address. A datagram goes to the
//! viewer whose ICE username it names (a STUN check), or who owns its source address (DTLS,
//! SRTP, later checks); anything else is counted and dropped, and never reaches a viewer.

use bytes::Bytes;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, SockaddrIn};
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::Interest;
use tokio::sync::mpsc;

/// Datagrams one viewer may have waiting: about a third of a second of the RTCP, STUN
/// and DTLS a browser sends. Past it, the datagram is dropped, as the network might.
pub const INBOX: usize = 64;

/// The largest datagram read (WebRTC keeps below 1,500; anything longer is not ours).
const MAX_DATAGRAM: usize = 2048;

/// A datagram for a viewer.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Bytes,
}

/// Where datagrams go: by the ICE username (the box's side of it, unique per viewer) and,
/// once a check came from it, by source address.
#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, mpsc::Sender<Datagram>>,
    by_address: HashMap<SocketAddr, (String, mpsc::Sender<Datagram>)>,
}

/// Counts of what the port received that went to no viewer.
#[derive(Debug, Default)]
pub struct Dropped {
    /// Not STUN from a known viewer, and from no viewer's address: scans, garbage.
    pub unknown: AtomicU64,
    /// For a viewer whose inbox was full.
    pub full: AtomicU64,
}

pub struct Port {
    socket: tokio::net::UdpSocket,
    pub port: u16,
    routes: Mutex<Routes>,
    pub dropped: Dropped,
}

impl Port {
    /// Serves on `socket` (bound to `0.0.0.0`, by us or by systemd), reading each
    /// datagram's destination (`IP_PKTINFO`).
    pub fn from_std(socket: std::net::UdpSocket) -> std::io::Result<Arc<Port>> {
        socket::setsockopt(&socket, socket::sockopt::Ipv4PacketInfo, &true)
            .map_err(std::io::Error::from)?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let port = socket.local_addr()?.port();
        Ok(Arc::new(Port {
            socket,
            port,
            routes: Mutex::new(Routes::default()),
            dropped: Dropped::default(),
        }))
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A viewer's datagrams go to `inbox` from now on.
    pub fn route(&self, ufrag: &str, inbox: mpsc::Sender<Datagram>) {
        self.routes().by_ufrag.insert(ufrag.to_string(), inbox);
    }

    /// The viewer is gone: nothing more goes to it.
    pub fn unroute(&self, ufrag: &str) {
        let mut routes = self.routes();
        routes.by_ufrag.remove(ufrag);
        routes.by_address.retain(|_, (owner, _)| owner != ufrag);
    }

    /// Sends one datagram from `source` (one of the box's addresses) to `destination`.
    pub async fn send(&self, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let SocketAddr::V4(to) = destination else {
            return; // IPv4 only: the candidates offered are
        };
        let from = match source.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => return,
        };
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, || {
                send_from(&self.socket, from, to, data)
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, %destination, "datagram not sent");
        }
    }

    /// Reads datagrams until `stop`, handing each to its viewer.
    pub async fn run(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = self.socket.async_io(Interest::READABLE, || {
                    receive(&self.socket, &mut buffer, self.port)
                }) => received,
            };
            match received {
                Ok(Some((length, source, destination))) => {
                    self.deliver(&buffer[..length], source, destination)
                }
                Ok(None) => {
                    self.dropped.unknown.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "WebRTC port: receive failed");
                    // A persistent error must not spin the runtime.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn deliver(&self, data: &[u8], source: SocketAddr, destination: SocketAddr) {
        let inbox = {
            let mut routes = self.routes();
            match viewer_ufrag(data) {
                Some(ufrag) => match routes.by_ufrag.get(&ufrag).cloned() {
                    Some(inbox) => {
                        // A check from here: the viewer's media will come from here too.
                        routes.by_address.insert(source, (ufrag, inbox.clone()));
                        Some(inbox)
                    }
                    None => None,
                },
                None => routes
                    .by_address
                    .get(&source)
                    .map(|(_, inbox)| inbox.clone()),
            }
        };
        let Some(inbox) = inbox else {
            self.dropped.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let datagram = Datagram {
            source,
            destination,
            data: Bytes::copy_from_slice(data),
        };
        if inbox.try_send(datagram).is_err() {
            self.dropped.full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The box's side of the ICE username in a STUN binding request (`box:browser`, RFC 8445
/// §7.2.2). Only the attribute is read, bounds-checked: the viewer's ICE agent checks the
/// message's integrity.
#[doc(hidden)]
pub fn viewer_ufrag(data: &[u8]) -> Option<String> {
    const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    let (header, mut attributes) = data.split_at_checked(20)?;
    if header[0..2] != BINDING_REQUEST || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    while let Some((head, rest)) = attributes.split_at_checked(4) {
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let length = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = rest.get(..length)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (local, _) = username.split_once(':')?;
            return Some(local.to_string());
        }
        // Values are padded to four bytes.
        attributes = rest.get(length.next_multiple_of(4)..)?;
    }
    None
}

/// One datagram: its length, source, and the address it was sent to. `None` for one
/// that is not IPv4 or came without its destination.
fn receive(
    socket: &tokio::net::UdpSocket,
    buffer: &mut [u8],
    port: u16,
) -> std::io::Result<Option<(usize, SocketAddr, SocketAddr)>> {
    let mut control = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buffer)];
    let message = socket::recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        socket::MsgFlags::MSG_TRUNC,
    )
    .map_err(std::io::Error::from)?;
    let Some(source) = message.address else {
        return Ok(None);
    };
    let destination = message.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|cmsg| match cmsg {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)))
            }
            _ => None,
        })
    });
    let length = message.bytes;
    let (Some(destination), true) = (destination, length <= MAX_DATAGRAM) else {
        return Ok(None);
    };
    Ok(Some((
        length,
        SocketAddr::V4(SocketAddrV4::new(source.ip(), source.port())),
        SocketAddr::V4(SocketAddrV4::new(destination, port)),
    )))
}

fn send_from(
    socket: &tokio::net::UdpSocket,
    from: Ipv4Addr,
    to: SocketAddrV4,
    data: &[u8],
) -> std::io::Result<()> {
    // SAFETY-free: in_pktinfo is plain data; ipi_spec_dst picks the source address.
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let control = [ControlMessage::Ipv4PacketInfo(&info)];
    let destination = SockaddrIn::from(to);
    socket::sendmsg(
        socket.as_raw_fd(),
        &[IoSlice::new(data)],
        &control,
        socket::MsgFlags::empty(),
        Some(&destination),
    )
    .map(|_| ())
    .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stun_binding_requests_name_a_viewer() {
        // A STUN binding request with USERNAME "abcd:wxyz" (no integrity: routing only
        // reads the name; the viewer's ICE agent checks the rest).
        let mut stun = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        stun.extend_from_slice(b"abcd:wxyz\0\0\0");
        assert_eq!(viewer_ufrag(&stun).as_deref(), Some("abcd"));
        assert_eq!(viewer_ufrag(&stun[..19]), None);
        assert_eq!(viewer_ufrag(&[0x80; 40]), None); // RTP
        assert_eq!(viewer_ufrag(&[0x16; 40]), None); // DTLS
        assert_eq!(viewer_ufrag(b"GET / HTTP/1.1\r\n\r\n   "), None);
    }
}
