//! Outbound addresses that users choose (async callbacks): kubefn resolves them itself and
//! connects only to the addresses it checked, refusing loopback, link-local (cloud metadata
//! endpoints among them), private and other internal ranges and kubefn's own port, unless an
//! admin allows a range. Otherwise any account could make kubefn send requests into the network
//! it runs in, to its own API or to a cloud's metadata service (server-side request forgery).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Why an outbound address is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    /// The name resolves to nothing.
    #[error("{host} does not resolve to an address")]
    Unresolvable {
        /// The host asked for.
        host: String,
    },
    /// The name resolves to an address kubefn does not call.
    #[error(
        "{host} resolves to {address}, {kind}; kubefn calls only public addresses (an admin can allow a range with --outbound-allow)"
    )]
    Internal {
        /// The host asked for.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// What kind of address it is.
        kind: &'static str,
    },
    /// The address is kubefn's own listener.
    #[error("{host}:{port} is kubefn itself; kubefn does not call itself back")]
    Itself {
        /// The host asked for.
        host: String,
        /// The port.
        port: u16,
    },
}

/// Which addresses user-chosen outbound connections may reach.
#[derive(Clone, Debug, Default)]
pub struct OutboundPolicy {
    allowed: Vec<IpNet>,
    own: Option<SocketAddr>,
}

impl OutboundPolicy {
    /// Public addresses, plus the `allowed` ranges; never `own` (kubefn's listen address).
    pub fn new(allowed: Vec<IpNet>, own: Option<SocketAddr>) -> OutboundPolicy {
        OutboundPolicy { allowed, own }
    }

    /// Reads `CIDR,…` (e.g. `10.20.0.0/16,127.0.0.1/32`).
    pub fn parse_ranges(text: &str) -> Result<Vec<IpNet>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|range| !range.is_empty())
            .map(|range| {
                range.parse::<IpNet>().map_err(|_| format!("{range:?} is not an address range such as 10.20.0.0/16"))
            })
            .collect()
    }

    /// Resolves `host` and returns the addresses of it that may be called (every address the
    /// name has must pass: a name that also points inside is refused whole).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let unresolvable = || OutboundError::Unresolvable { host: host.to_string() };
        let addresses: Vec<SocketAddr> =
            tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
                .await
                .map_err(|_| unresolvable())?
                .collect();
        if addresses.is_empty() {
            return Err(unresolvable());
        }
        for address in &addresses {
            self.check(host, *address)?;
        }
        Ok(addresses)
    }

    fn check(&self, host: &str, address: SocketAddr) -> Result<(), OutboundError> {
        let ip = canonical(address.ip());
        let local = ip.is_loopback() || ip.is_unspecified() || self.own.is_some_and(|own| own.ip() == ip);
        if self.own.is_some_and(|own| own.port() == address.port()) && local {
            return Err(OutboundError::Itself { host: host.to_string(), port: address.port() });
        }
        if self.allowed.iter().any(|range| range.contains(&ip)) {
            return Ok(());
        }
        match internal(ip) {
            Some(kind) => Err(OutboundError::Internal { host: host.to_string(), address: ip, kind: kind.describe() }),
            None => Ok(()),
        }
    }
}

/// The kinds of address that are not a public host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Internal {
    /// 127/8, ::1.
    Loopback,
    /// Unspecified, broadcast, multicast, 0/8.
    NotAHost,
    /// 169.254/16, fe80::/10: where cloud metadata services answer.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7.
    Private,
}

impl Internal {
    /// In words, for refusals.
    pub fn describe(self) -> &'static str {
        match self {
            Internal::Loopback => "a loopback address",
            Internal::NotAHost => "not a host's address",
            Internal::LinkLocal => "a link-local address (cloud metadata services live there)",
            Internal::Private => "a private address",
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is judged as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of internal address `ip` is (IPv4-mapped forms judged as IPv4), if it is one.
pub fn internal(ip: IpAddr) -> Option<Internal> {
    // INTERNAL_RANGES must list the same addresses (a test checks both ends of each range).
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let shared = Ipv4Addr::new(100, 64, 0, 0);
            if v4.is_loopback() {
                Some(Internal::Loopback)
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.octets()[0] == 0 {
                Some(Internal::NotAHost)
            } else if v4.is_link_local() {
                Some(Internal::LinkLocal)
            } else if v4.is_private() || IpNet::new(shared.into(), 10).is_ok_and(|n| n.contains(&IpAddr::V4(v4))) {
                Some(Internal::Private)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some(Internal::Loopback)
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some(Internal::NotAHost)
            } else if first & 0xffc0 == 0xfe80 {
                Some(Internal::LinkLocal)
            } else if first & 0xfe00 == 0xfc00 {
                Some(Internal::Private)
            } else {
                None
            }
        }
    }
}

/// The ranges [`internal`] refuses, as CIDRs, for what must say them as ranges (the
/// NetworkPolicy that keeps function pods off them).
pub const INTERNAL_RANGES: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_ranges_are_what_internal_refuses() {
        for range in INTERNAL_RANGES {
            let net: IpNet = range.parse().expect("a CIDR");
            for address in [net.network(), net.broadcast()] {
                assert!(internal(address).is_some(), "{address} in {range}");
            }
        }
        for public in ["8.8.8.8", "100.128.0.1", "172.32.0.1", "2001:db8::1", "11.0.0.0"] {
            let address: IpAddr = public.parse().expect("address");
            assert!(
                internal(address).is_none()
                    && !INTERNAL_RANGES.iter().any(|r| r.parse::<IpNet>().is_ok_and(|n| n.contains(&address))),
                "{public}"
            );
        }
    }

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("socket address")
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        let policy = OutboundPolicy::default();
        for refused in [
            "127.0.0.1:80",
            "169.254.169.254:80",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
            "[::1]:80",
            "[fe80::1]:80",
            "[fd00::1]:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            let error = policy.check("h", address(refused)).expect_err(refused);
            assert!(matches!(error, OutboundError::Internal { .. }), "{refused}: {error}");
            assert!(error.to_string().contains("--outbound-allow"), "{error}");
        }
        for public in ["93.184.215.14:80", "203.0.113.80:443", "[2606:4700::1111]:80"] {
            assert_eq!(policy.check("h", address(public)), Ok(()), "{public}");
        }
        assert!(
            policy.check("h", address("169.254.169.254:80")).expect_err("metadata").to_string().contains("metadata")
        );
    }

    #[test]
    fn an_allowed_range_opens_only_itself_and_never_kubefns_own_port() {
        let allowed = OutboundPolicy::parse_ranges("127.0.0.0/8, 10.20.0.0/16").expect("ranges");
        let policy = OutboundPolicy::new(allowed, Some(address("0.0.0.0:3000")));
        assert_eq!(policy.check("h", address("127.0.0.1:9000")), Ok(()));
        assert_eq!(policy.check("h", address("10.20.3.4:80")), Ok(()));
        assert!(policy.check("h", address("10.21.0.1:80")).is_err());
        assert_eq!(
            policy.check("h", address("127.0.0.1:3000")),
            Err(OutboundError::Itself { host: "h".into(), port: 3000 })
        );
        assert!(policy.check("h", address("93.184.215.14:3000")).is_ok(), "another host's port 3000 is not kubefn");
        assert!(OutboundPolicy::parse_ranges("10.0.0.0/33").unwrap_err().contains("10.0.0.0/33"));
        assert!(OutboundPolicy::parse_ranges("").expect("none").is_empty());
    }

    #[tokio::test]
    async fn names_are_resolved_and_judged_by_every_address() {
        let policy = OutboundPolicy::default();
        let refused = policy.resolve("localhost", 80).await.expect_err("localhost is loopback");
        assert!(matches!(refused, OutboundError::Internal { kind: "a loopback address", .. }), "{refused}");
        assert!(matches!(policy.resolve("no-such-host.invalid", 80).await, Err(OutboundError::Unresolvable { .. })));
    }
}
