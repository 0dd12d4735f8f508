//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) on connectors with
//! `proxy_protocol = true`: who may send one (`trusted_proxies`, matched against the TCP
//! peer), where a header ends, and which client address it carries. Pure: the runtime reads
//! the bytes (bounded, with a timeout) and asks here.
//!
//! Framing is decided here, before the `ppp` crate parses: a v1 header is complete at its
//! CRLF (at most 107 octets), a v2 header at 16 octets plus its length field. `ppp` then
//! parses only complete headers, so a header split over several reads is never mistaken for a
//! malformed one, and nothing after the header is consumed: those bytes are SMTP (a client
//! that pipelines from the start) or a TLS ClientHello (implicit TLS), and belong to the
//! session.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::v1;
use ppp::v2;

/// The largest header accepted. v1 is at most 107 octets; a v2 header is 16 octets plus
/// addresses (at most 216 for AF_UNIX) plus TLVs, which load balancers use for a few dozen
/// octets (AWS VPC endpoint id, Azure link id, TLS details from HAProxy).
pub const PROXY_HEADER_BYTES_MAX: usize = 4096;

const V1_BYTES_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_BYTES: usize = 16;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The proxy relays a connection from this client.
    Client(SocketAddr),
    /// The proxy's own connection (v2 LOCAL, e.g. a health check; v1 UNKNOWN): use the TCP
    /// peer's address, as the protocol asks.
    Local,
}

/// The result of looking at the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// Not enough bytes yet; read more (up to `PROXY_HEADER_BYTES_MAX`).
    NeedMore,
    /// A header of `len` octets; what follows it is the client's.
    Done {
        /// What it says.
        header: Header,
        /// Its length in octets.
        len: usize,
    },
    /// Not a PROXY header, or one we refuse; the reason is for the log.
    Invalid(&'static str),
}

/// May `peer` (the TCP peer address) send a PROXY header?
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

/// Looks for a complete PROXY header at the start of `input`.
pub fn parse(input: &[u8]) -> Parse {
    let n = input.len().min(V2_SIGNATURE.len());
    if n > 0 && input[..n] == V2_SIGNATURE[..n] {
        return parse_v2(input);
    }
    let n = input.len().min(V1_PREFIX.len());
    if input[..n] == V1_PREFIX[..n] {
        return parse_v1(input);
    }
    Parse::Invalid("the connection does not start with a PROXY header")
}

fn parse_v1(input: &[u8]) -> Parse {
    let window = &input[..input.len().min(V1_BYTES_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= V1_BYTES_MAX {
            Parse::Invalid("PROXY v1 header longer than 107 octets")
        } else {
            Parse::NeedMore
        };
    };
    let len = cr + 2;
    match v1::Header::try_from(&input[..len]) {
        Ok(h) => match h.addresses {
            v1::Addresses::Tcp4(a) => {
                Parse::Done { header: Header::Client(SocketAddr::from((a.source_address, a.source_port))), len }
            }
            v1::Addresses::Tcp6(a) => {
                Parse::Done { header: Header::Client(SocketAddr::from((a.source_address, a.source_port))), len }
            }
            v1::Addresses::Unknown => Parse::Done { header: Header::Local, len },
        },
        Err(_) => Parse::Invalid("malformed PROXY v1 header"),
    }
}

fn parse_v2(input: &[u8]) -> Parse {
    if input.len() < V2_FIXED_BYTES {
        return Parse::NeedMore;
    }
    let len = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([input[14], input[15]]));
    if len > PROXY_HEADER_BYTES_MAX {
        return Parse::Invalid("PROXY v2 header longer than the limit");
    }
    if input.len() < len {
        return Parse::NeedMore;
    }
    let h = match v2::Header::try_from(&input[..len]) {
        Ok(h) => h,
        Err(_) => return Parse::Invalid("malformed PROXY v2 header"),
    };
    if h.command == v2::Command::Local {
        return Parse::Done { header: Header::Local, len };
    }
    let client = match h.addresses {
        v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        // PROXY with AF_UNSPEC: the protocol says to use the real connection's addresses.
        v2::Addresses::Unspecified => return Parse::Done { header: Header::Local, len },
        v2::Addresses::Unix(_) => return Parse::Invalid("PROXY v2 header with a UNIX socket source"),
    };
    if h.protocol != v2::Protocol::Stream {
        return Parse::Invalid("PROXY v2 header for a datagram connection");
    }
    Parse::Done { header: Header::Client(client), len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};

    fn v2(command: Command, src: &str, dst: &str) -> Vec<u8> {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        Builder::with_addresses(Version::Two | command, Protocol::Stream, (src, dst)).build().unwrap()
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 192.0.2.9 10.0.0.1 51000 25\r\nEHLO x\r\n";
        assert_eq!(parse(h), Parse::Done { header: Header::Client("192.0.2.9:51000".parse().unwrap()), len: 40 });
        let h = b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 25\r\n";
        assert_eq!(
            parse(h),
            Parse::Done { header: Header::Client("[2001:db8::9]:51000".parse().unwrap()), len: h.len() }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Parse::Done { header: Header::Local, len: 15 });
        assert!(matches!(parse(b"PROXY TCP4 192.0.2.9 10.0.0.1 51000 99999\r\n"), Parse::Invalid(_)));
        assert!(matches!(parse(b"PROXY TCP4 nonsense\r\n"), Parse::Invalid(_)));
        assert!(matches!(parse(&[b'P'; 200]), Parse::Invalid(_)));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        assert!(matches!(parse(long.as_bytes()), Parse::Invalid(_)));
    }

    #[test]
    fn v2_headers() {
        let h = v2(Command::Proxy, "192.0.2.9:51000", "10.0.0.1:25");
        assert_eq!(h.len(), 28);
        assert_eq!(parse(&h), Parse::Done { header: Header::Client("192.0.2.9:51000".parse().unwrap()), len: 28 });
        let h = v2(Command::Proxy, "[2001:db8::9]:51000", "[2001:db8::1]:25");
        assert_eq!(parse(&h), Parse::Done { header: Header::Client("[2001:db8::9]:51000".parse().unwrap()), len: 52 });
        let h = v2(Command::Local, "192.0.2.9:51000", "10.0.0.1:25");
        assert_eq!(parse(&h), Parse::Done { header: Header::Local, len: 28 });
        // A v2 header announcing more than the limit is refused before it is read.
        let mut h = v2(Command::Proxy, "192.0.2.9:51000", "10.0.0.1:25");
        h[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(matches!(parse(&h), Parse::Invalid(_)));
        // Datagram is not a TCP connection.
        let (src, dst): (SocketAddr, SocketAddr) = ("192.0.2.9:1".parse().unwrap(), "10.0.0.1:25".parse().unwrap());
        let h = Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Datagram, (src, dst)).build().unwrap();
        assert!(matches!(parse(&h), Parse::Invalid(_)));
    }

    /// Every split of a header followed by client bytes gives NeedMore, then exactly the
    /// header: the bytes after it are never taken.
    #[test]
    fn any_split_needs_more_then_stops_at_the_header_end() {
        let mut v2h = v2(Command::Proxy, "192.0.2.9:51000", "10.0.0.1:25");
        v2h.extend_from_slice(b"\x16\x03\x01 a TLS ClientHello");
        let mut v1h = b"PROXY TCP4 192.0.2.9 10.0.0.1 51000 25\r\n".to_vec();
        v1h.extend_from_slice(b"EHLO pipelined\r\n");
        for (input, header_len) in [(&v2h, 28), (&v1h, 40)] {
            for cut in 0..header_len {
                assert_eq!(parse(&input[..cut]), Parse::NeedMore, "cut at {cut}");
            }
            for cut in header_len..=input.len() {
                match parse(&input[..cut]) {
                    Parse::Done { len, header } => {
                        assert_eq!(len, header_len);
                        assert_eq!(header, Header::Client("192.0.2.9:51000".parse().unwrap()));
                    }
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn not_a_header() {
        for input in [&b"EHLO client\r\n"[..], b"\x16\x03\x01\x02\x00", b"GET / HTTP/1.1\r\n", b"PROXZ"] {
            assert!(matches!(parse(input), Parse::Invalid(_)), "{input:?}");
        }
        assert_eq!(parse(b""), Parse::NeedMore);
        assert_eq!(parse(b"PRO"), Parse::NeedMore);
        assert_eq!(parse(b"\r\n\r\n"), Parse::NeedMore);
    }

    #[test]
    fn trust_is_by_peer_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "2001:db8::1/128".parse().unwrap()];
        assert!(is_trusted("10.0.0.7".parse().unwrap(), &trusted));
        assert!(is_trusted("::ffff:10.0.0.7".parse().unwrap(), &trusted));
        assert!(is_trusted("2001:db8::1".parse().unwrap(), &trusted));
        assert!(!is_trusted("10.0.1.7".parse().unwrap(), &trusted));
        assert!(!is_trusted("10.0.0.7".parse().unwrap(), &[]));
    }
}
