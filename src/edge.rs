//! What both transports (REST and Socket.IO) share at the network edge: the payload cap and the
//! client's address.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::ConnectInfo,
    http::{Extensions, HeaderMap},
};
use ipnet::IpNet;

/// Socket.IO max payload, the websocket message/frame caps and the HTTP body limit.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The client's address: the peer, unless the peer is a trusted proxy (`CHAT_TRUSTED_PROXIES`);
/// then `X-Forwarded-For` is walked from the right (each proxy appends the address it saw)
/// past every trusted hop, and the first untrusted address is the client. Entries left of it
/// were written by the client and are never believed. `None` without a peer address.
pub fn client_ip(headers: &HeaderMap, ext: &Extensions, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = ext.get::<ConnectInfo<SocketAddr>>()?.0.ip().to_canonical();
    Some(forwarded_for(headers, peer, trusted))
}

fn forwarded_for(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    // Several headers are one list, in order.
    let values: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    for hop in values.iter().rev().flat_map(|v| v.rsplit(',')).map(str::trim) {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            // Garbage from a client past our proxies: stop at the last address we believe.
            Err(_) => break,
        }
    }
    client
}

/// The throttling key of an address: the address itself for IPv4, its /64 for IPv6 (one
/// subscriber usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&["6.6.6.6, 1.2.3.4"]);
        // From an untrusted peer the header is ignored.
        assert_eq!(forwarded_for(&h, ip("9.9.9.9"), &trusted), ip("9.9.9.9"));
        assert_eq!(forwarded_for(&h, ip("9.9.9.9"), &[]), ip("9.9.9.9"));
        // From our proxy: the address it saw, not what the client wrote before it.
        assert_eq!(forwarded_for(&h, ip("10.1.1.1"), &trusted), ip("1.2.3.4"));
        // Two hops of ours (ingress → nginx): skip both.
        let h = headers(&["6.6.6.6, 1.2.3.4, 10.2.2.2"]);
        assert_eq!(forwarded_for(&h, ip("10.1.1.1"), &trusted), ip("1.2.3.4"));
        let h = headers(&["6.6.6.6", "1.2.3.4"]);
        assert_eq!(forwarded_for(&h, ip("10.1.1.1"), &trusted), ip("1.2.3.4"));
        // Garbage or nothing: the last address we believe.
        assert_eq!(forwarded_for(&headers(&["nonsense"]), ip("10.1.1.1"), &trusted), ip("10.1.1.1"));
        assert_eq!(forwarded_for(&headers(&[]), ip("10.1.1.1"), &trusted), ip("10.1.1.1"));
        assert_eq!(forwarded_for(&headers(&["::ffff:1.2.3.4"]), ip("10.1.1.1"), &trusted), ip("1.2.3.4"));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(address_key(ip("2001:db8:1:2:aaaa::1")), address_key(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(address_key(ip("2001:db8:1:2::1")), address_key(ip("2001:db8:1:3::1")));
        assert_eq!(address_key(ip("1.2.3.4")), "1.2.3.4");
    }
}
