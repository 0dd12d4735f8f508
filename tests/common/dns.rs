//! A tiny DNS server on a loopback UDP port, answering from a table (MX, A and AAAA records),
//! so that MX routing is tested for real through hickory without any traffic leaving the
//! machine.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Records by lowercase name (no trailing dot).
#[derive(Default, Clone)]
pub struct Zone {
    /// name → MX records (preference, exchange).
    pub mx: HashMap<String, Vec<(u16, String)>>,
    /// name → A records.
    pub a: HashMap<String, Vec<Ipv4Addr>>,
    /// name → AAAA records.
    pub aaaa: HashMap<String, Vec<Ipv6Addr>>,
}

/// A running DNS server.
pub struct Dns {
    /// The UDP port on 127.0.0.1.
    pub port: u16,
    /// Queries seen: (name, type).
    pub queries: Arc<Mutex<Vec<(String, String)>>>,
}

impl Dns {
    /// `config` (a test configuration template) with this server as its only nameserver.
    pub fn configure(&self, config: &str) -> String {
        let from = "nameservers = [\"127.0.0.1:{nodns}\"]";
        assert!(config.contains(from), "config template changed");
        config.replace(from, &format!("nameservers = [\"127.0.0.1:{}\"]", self.port))
    }

    /// Serves `zone` until the process ends.
    pub fn start(zone: Zone) -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let queries: Arc<Mutex<Vec<(String, String)>>> = Default::default();
        let seen = Arc::clone(&queries);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else { return };
                let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
                let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.metadata.authoritative = true;
                for q in &req.queries {
                    resp.add_query(q.clone());
                    let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    seen.lock().unwrap().push((name.clone(), format!("{:?}", q.query_type)));
                    let known =
                        zone.mx.contains_key(&name) || zone.a.contains_key(&name) || zone.aaaa.contains_key(&name);
                    match q.query_type {
                        RecordType::MX if zone.mx.contains_key(&name) => {
                            for (pref, host) in &zone.mx[&name] {
                                let exchange = Name::from_ascii(format!("{}.", host.trim_end_matches('.'))).unwrap();
                                resp.add_answer(Record::from_rdata(
                                    q.name.clone(),
                                    60,
                                    RData::MX(MX::new(*pref, exchange)),
                                ));
                            }
                        }
                        RecordType::A if zone.a.contains_key(&name) => {
                            for ip in &zone.a[&name] {
                                resp.add_answer(Record::from_rdata(q.name.clone(), 60, RData::A(A(*ip))));
                            }
                        }
                        RecordType::AAAA if zone.aaaa.contains_key(&name) => {
                            for ip in &zone.aaaa[&name] {
                                resp.add_answer(Record::from_rdata(q.name.clone(), 60, RData::AAAA(AAAA(*ip))));
                            }
                        }
                        _ if known => {} // NOERROR, no data
                        _ => resp.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer);
                }
            }
        });
        Dns { port, queries }
    }
}
