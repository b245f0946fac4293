//! CIDR ranges for the trusted-proxy allowlist.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr =
            addr.trim().parse().map_err(|_| format!("`{text}` is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}` has a bad prefix length"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() -> Result<(), String> {
        let net = IpNet::parse("10.1.0.0/16")?;
        assert!(net.contains("10.1.2.3".parse().map_err(|_| "ip")?));
        assert!(!net.contains("10.2.0.1".parse().map_err(|_| "ip")?));
        assert!(net.contains("::ffff:10.1.0.9".parse().map_err(|_| "ip")?), "v4-mapped v6");
        let host = IpNet::parse("127.0.0.1")?;
        assert!(host.contains("127.0.0.1".parse().map_err(|_| "ip")?));
        assert!(!host.contains("127.0.0.2".parse().map_err(|_| "ip")?));
        assert!(IpNet::parse("0.0.0.0/0")?.contains("8.8.8.8".parse().map_err(|_| "ip")?));
        assert!(IpNet::parse("::1/129").is_err());
        assert!(IpNet::parse("localhost").is_err());
        Ok(())
    }
}
