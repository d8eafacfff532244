//! A small MaxMind DB writer for tests: a country database in the
//! GeoLite2-Country layout (`{"country": {"iso_code": "DE"}}`) over a few
//! networks, IPv6 tree with IPv4 under `::/96`, 24-bit records.
//! Format: <https://maxmind.github.io/MaxMind-DB/>.

use std::net::IpAddr;

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// The bytes of a country database mapping each `(cidr, iso_code)`.
/// Networks must not overlap.
pub fn country_db(networks: &[(&str, &str)]) -> Vec<u8> {
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    let mut data = Vec::new();
    let mut offsets: Vec<(String, usize)> = Vec::new();
    for (cidr, iso) in networks {
        let (addr, len) = cidr.split_once('/').expect("a CIDR");
        let (bits, len): (u128, u32) = match addr.parse::<IpAddr>().expect("an address") {
            IpAddr::V4(v4) => (u32::from(v4) as u128, 96 + len.parse::<u32>().unwrap()),
            IpAddr::V6(v6) => (u128::from(v6), len.parse().unwrap()),
        };
        let off = match offsets.iter().find(|(c, _)| c == iso) {
            Some((_, o)) => *o,
            None => {
                let o = data.len();
                data.extend_from_slice(&[0xE1, 0x47]);
                data.extend_from_slice(b"country");
                data.extend_from_slice(&[0xE1, 0x48]);
                data.extend_from_slice(b"iso_code");
                data.push(0x40 | iso.len() as u8);
                data.extend_from_slice(iso.as_bytes());
                offsets.push((iso.to_string(), o));
                o
            }
        };
        let mut node = 0;
        for i in 0..len {
            let bit = ((bits >> (127 - i)) & 1) as usize;
            if i + 1 == len {
                nodes[node][bit] = Rec::Data(off);
                break;
            }
            node = match nodes[node][bit] {
                Rec::Node(n) => n,
                _ => {
                    nodes.push([Rec::Empty; 2]);
                    let n = nodes.len() - 1;
                    nodes[node][bit] = Rec::Node(n);
                    n
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(o) => count + 16 + o,
            } as u32;
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let key = |out: &mut Vec<u8>, k: &str| {
        out.push(0x40 | k.len() as u8);
        out.extend_from_slice(k.as_bytes());
    };
    out.push(0xE0 | 9);
    key(&mut out, "binary_format_major_version");
    out.extend_from_slice(&[0xA1, 2]);
    key(&mut out, "binary_format_minor_version");
    out.push(0xA0);
    key(&mut out, "build_epoch");
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as u32;
    out.extend_from_slice(&[0x04, 0x02]);
    out.extend_from_slice(&epoch.to_be_bytes());
    key(&mut out, "database_type");
    key(&mut out, "Test-Country");
    key(&mut out, "description");
    out.push(0xE1);
    key(&mut out, "en");
    key(&mut out, "test");
    key(&mut out, "ip_version");
    out.extend_from_slice(&[0xA1, 6]);
    key(&mut out, "languages");
    out.extend_from_slice(&[0x01, 0x04]);
    key(&mut out, "en");
    key(&mut out, "node_count");
    out.push(0xC4);
    out.extend_from_slice(&(count as u32).to_be_bytes());
    key(&mut out, "record_size");
    out.extend_from_slice(&[0xA1, 24]);
    out
}
