//! What OBS is told to connect to: the RTMP server URL, with the best host name the box
//! knows for itself. Used by the operator's CLI (`channel add`) and the dashboard's API
//! alike, so both print the same settings.

use crate::config::RtmpConfig;
use std::net::IpAddr;

/// `rtmp://HOST:PORT/live`, bracketing an IPv6 host.
pub fn server_url(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("rtmp://[{host}]:{port}/live")
    } else {
        format!("rtmp://{host}:{port}/live")
    }
}

/// The host OBS should use when nothing better is known: the configured public host, else
/// the listen address if it is a specific one, else this box's first LAN address.
pub fn public_host(rtmp: &RtmpConfig) -> String {
    if !rtmp.public_host.is_empty() {
        rtmp.public_host.clone()
    } else if !rtmp.listen.ip().is_unspecified() {
        rtmp.listen.ip().to_string()
    } else {
        lan_address().map_or_else(|| "localhost".to_string(), |ip| ip.to_string())
    }
}

/// The first IPv4 address of an interface that is up and not loopback.
fn lan_address() -> Option<IpAddr> {
    let interfaces = nix::ifaddrs::getifaddrs().ok()?;
    interfaces
        .filter(|i| {
            i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                && !i
                    .flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .find_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
}
