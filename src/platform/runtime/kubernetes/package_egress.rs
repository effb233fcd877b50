//! The package egress: an HTTP CONNECT proxy through which the dependency installs of function
//! pods (pip, npm) reach the package registries, and nothing else.
//!
//! Function pods get no route to the internet of their own: a pod that could reach any address
//! could reach cloud metadata endpoints, kubefn's own API and other tenants' services. Their
//! init container instead gets `HTTPS_PROXY` pointing here, and this proxy opens tunnels only to
//! the registry hosts it was given (PyPI's and npm's by default, plus the hosts of the package
//! indexes an admin configured), on port 443, never to a loopback, link-local or unspecified
//! address. pip and npm speak TLS through the tunnel themselves: the proxy sees host names, not
//! packages. Only the init container gets the proxy; the function's own container does not.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Registries pods may reach when nothing else is configured.
pub const DEFAULT_HOSTS: &[&str] = &["pypi.org", "files.pythonhosted.org", "registry.npmjs.org"];
/// The most tunnels open at once (each install opens a handful).
const MAX_TUNNELS: usize = 256;
/// The longest request head a client may send before the tunnel opens.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its CONNECT, and the proxy to reach the registry.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the package egress could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the package egress on {address}; choose another --package-egress-listen")]
pub struct EgressError {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The registry hosts to allow: the defaults, plus the hosts of the package index settings
/// kubefn passes to installers (`PIP_INDEX_URL`, `PIP_EXTRA_INDEX_URL`, `npm_config_registry`).
pub fn registry_hosts(installer_env: &[(String, String)]) -> Vec<String> {
    let mut hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
    for (name, value) in installer_env {
        if matches!(name.as_str(), "PIP_INDEX_URL" | "PIP_EXTRA_INDEX_URL" | "npm_config_registry") {
            hosts.extend(value.split_whitespace().filter_map(host_of_url));
        }
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

fn host_of_url(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// A running package egress; stops when dropped or closed.
#[derive(Debug)]
pub struct PackageEgress {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PackageEgress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PackageEgress {
    /// Listens on `listen` and tunnels to `hosts` only.
    pub async fn start(listen: SocketAddr, hosts: Vec<String>) -> Result<PackageEgress, EgressError> {
        let listener = TcpListener::bind(listen).await.map_err(|source| EgressError { address: listen, source })?;
        let address = listener.local_addr().map_err(|source| EgressError { address: listen, source })?;
        let hosts: Arc<[String]> = hosts.into();
        let tunnels = Arc::new(Semaphore::new(MAX_TUNNELS));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, peer)) = listener.accept().await else { continue };
                let Ok(permit) = tunnels.clone().try_acquire_owned() else {
                    // Full: the client sees the connection close and pip/npm retry.
                    continue;
                };
                let hosts = hosts.clone();
                tokio::spawn(async move {
                    if let Err(reason) = tunnel(client, &hosts).await {
                        tracing::debug!(%peer, %reason, "package egress refused or ended a tunnel");
                    }
                    drop(permit);
                });
            }
        });
        tracing::info!(%address, "package egress for function dependency installs listening");
        Ok(PackageEgress { address, task })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// What a client asked for, or why it is refused (status and text for the answer).
fn parse_connect(head: &str, hosts: &[String]) -> Result<(String, u16), (u16, String)> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != "CONNECT" {
        return Err((405, "kubefn's package egress only opens CONNECT tunnels (set HTTPS_PROXY)".into()));
    }
    let (host, port) = target.rsplit_once(':').ok_or((400, format!("{target:?} is not host:port")))?;
    let port: u16 = port.parse().map_err(|_| (400, format!("{target:?} is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if port != 443 || !hosts.contains(&host) {
        return Err((
            403,
            format!("kubefn's package egress reaches only {} on port 443, not {target}", hosts.join(", ")),
        ));
    }
    Ok((host, port))
}

/// Addresses a tunnel never goes to, whatever a registry's name resolves to: every internal
/// kind but private ranges (an admin's package mirror may well live in one).
fn forbidden(ip: IpAddr) -> bool {
    crate::platform::outbound::internal(ip).is_some_and(|kind| kind != crate::platform::outbound::Internal::Private)
}

async fn answer(client: &mut TcpStream, status: u16, text: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        _ => "Bad Gateway",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    client.write_all(response.as_bytes()).await
}

async fn tunnel(mut client: TcpStream, hosts: &[String]) -> Result<(), String> {
    let mut head = Vec::with_capacity(512);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if read == 0 || head.len() + read > MAX_HEAD {
                return Err("no complete request head".to_string());
            }
            head.extend_from_slice(&chunk[..read]);
        }
        Ok(())
    };
    tokio::time::timeout(HANDSHAKE, read_head).await.map_err(|_| "no request in time".to_string())??;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").map_or(head.len(), |p| p + 4);
    let (host, port) = match parse_connect(&String::from_utf8_lossy(&head[..end]), hosts) {
        Ok(target) => target,
        Err((status, text)) => {
            let _ = answer(&mut client, status, &text).await;
            return Err(text);
        }
    };
    let connect = async {
        let addresses: Vec<SocketAddr> =
            tokio::net::lookup_host((host.as_str(), port)).await?.filter(|a| !forbidden(a.ip())).collect();
        let mut last = std::io::Error::other(format!("{host} resolves to no address the egress may reach"));
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    };
    let mut upstream = match tokio::time::timeout(HANDSHAKE, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let _ = answer(&mut client, 502, &format!("cannot reach {host}: {error}")).await;
            return Err(error.to_string());
        }
        Err(_) => {
            let _ = answer(&mut client, 502, &format!("{host} did not answer in time")).await;
            return Err("registry timeout".into());
        }
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.map_err(|e| e.to_string())?;
    // Bytes the client sent after its head (a TLS hello, eagerly) go first.
    upstream.write_all(&head[end..]).await.map_err(|e| e.to_string())?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        registry_hosts(&[])
    }

    #[test]
    fn configured_indexes_join_the_default_registries() {
        let env = vec![
            ("PIP_INDEX_URL".to_string(), "https://user:secret@Pypi.Example.com:8443/simple".to_string()),
            ("npm_config_registry".to_string(), "https://npm.example.com/".to_string()),
            ("PIP_TRUSTED_HOST".to_string(), "ignored.example.com".to_string()),
        ];
        let hosts = registry_hosts(&env);
        assert!(
            hosts.contains(&"pypi.example.com".to_string()) && hosts.contains(&"npm.example.com".to_string()),
            "{hosts:?}"
        );
        assert!(hosts.contains(&"pypi.org".to_string()));
        assert!(!hosts.iter().any(|h| h.contains("ignored") || h.contains("secret")), "{hosts:?}");
    }

    #[test]
    fn only_connect_to_an_allowed_registry_on_443_passes() {
        let hosts = hosts();
        assert_eq!(
            parse_connect("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n", &hosts),
            Ok(("pypi.org".into(), 443))
        );
        assert_eq!(
            parse_connect("CONNECT Registry.NPMJS.org:443 HTTP/1.1\r\n\r\n", &hosts),
            Ok(("registry.npmjs.org".into(), 443))
        );
        for refused in [
            "CONNECT 169.254.169.254:443 HTTP/1.1",
            "CONNECT pypi.org:80 HTTP/1.1",
            "CONNECT pypi.org.evil.example:443 HTTP/1.1",
            "CONNECT kubefn.kubefn-system.svc:3000 HTTP/1.1",
        ] {
            let (status, text) = parse_connect(refused, &hosts).expect_err(refused);
            assert_eq!(status, 403, "{refused}");
            assert!(text.contains("reaches only"), "{text}");
        }
        assert_eq!(
            parse_connect("GET http://169.254.169.254/latest/meta-data HTTP/1.1", &hosts).map_err(|e| e.0),
            Err(405)
        );
        assert_eq!(parse_connect("CONNECT pypi.org HTTP/1.1", &hosts).map_err(|e| e.0), Err(400));
    }

    #[test]
    fn loopback_link_local_and_unspecified_addresses_are_never_reached() {
        for ip in ["127.0.0.1", "169.254.169.254", "0.0.0.0", "::1", "fe80::1"] {
            assert!(forbidden(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["151.101.0.223", "10.1.2.3", "2a04:4e42::223"] {
            assert!(!forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn a_tunnel_to_anything_else_is_refused_with_the_reason() {
        let egress = PackageEgress::start(SocketAddr::from(([127, 0, 0, 1], 0)), hosts()).await.expect("egress");
        let mut client = TcpStream::connect(egress.address()).await.expect("connect");
        client.write_all(b"CONNECT 127.0.0.1:3000 HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n\r\n").await.expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden"), "{answer}");
        assert!(answer.ends_with("not 127.0.0.1:3000"), "{answer}");
    }

    #[tokio::test]
    async fn an_allowed_name_that_resolves_to_loopback_is_still_refused() {
        // "localhost" allowed by mistake: the resolved address decides, and loopback is never reached.
        let egress = PackageEgress::start(SocketAddr::from(([127, 0, 0, 1], 0)), vec!["localhost".into()])
            .await
            .expect("egress");
        let mut client = TcpStream::connect(egress.address()).await.expect("connect");
        client.write_all(b"CONNECT localhost:443 HTTP/1.1\r\n\r\n").await.expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
        assert!(answer.contains("no address the egress may reach"), "{answer}");
    }
}
