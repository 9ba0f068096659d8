//! Which IP addresses a webhook may be posted to: those the IANA special-purpose address
//! registries (IPv4 and IPv6) call globally reachable. Everything else (loopback, private,
//! shared, link-local, documentation, benchmarking, multicast, reserved, and the IPv6
//! forms that carry such an IPv4 address inside) could lead a delivery into the service's
//! own network, so an endpoint may point there only where the operator allows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 blocks that are not globally reachable, as (network, prefix length). Where a
/// block holds a few globally reachable addresses (192.0.0.9 and .10, anycast for PCP and
/// TURN) the whole block is refused: no webhook receiver lives there.
const V4_INTERNAL: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network" (RFC 791)
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space, carrier-grade NAT (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments (RFC 6890)
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation, TEST-NET-1
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast, deprecated (RFC 7526)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking (RFC 2544)
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation, TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation, TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved (RFC 1112), with the limited broadcast address
];

/// IPv6 blocks inside global unicast (`2000::/3`) that are not globally reachable, or
/// that are refused outright. Everything outside `2000::/3` is refused by
/// [`internal_v6`]: IANA assigns unicast space only from it, and the rest holds the
/// unspecified, loopback, IPv4-compatible, -mapped and -translated forms, the NAT64
/// local-use prefix, discard-only, unique-local (`fc00::/7`), link-local (`fe80::/10`),
/// the deprecated site-local (`fec0::/10`) and multicast (`ff00::/8`) blocks.
const V6_INTERNAL: [(Ipv6Addr, u8); 4] = [
    // IETF protocol assignments (Teredo among them, which hides an IPv4 address); its
    // few globally reachable exceptions (AMT, AS112, ORCHIDv2, DRIP) host no receivers.
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation (RFC 3849)
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),     // segment routing SIDs (RFC 9602)
];

/// Whether `ip` is not globally reachable: what an endpoint may not point at unless the
/// operator allows internal addresses.
pub fn internal_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => internal_v4(ip),
        IpAddr::V6(ip) => internal_v6(ip),
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    V4_INTERNAL.iter().any(|&(network, prefix)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        bits & mask == u32::from(network)
    })
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let within = |network: Ipv6Addr, prefix: u8| {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        bits & mask == u128::from(network)
    };
    // The IPv4 address inside decides where NAT64 (well-known prefix, RFC 6052) and 6to4
    // (RFC 3056) lead: a translator or relay forwards to it.
    if within(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return internal_v4(Ipv4Addr::from(bits as u32));
    }
    if within(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return internal_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    !within(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3)
        || V6_INTERNAL.iter().any(|&(network, prefix)| within(network, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(text: &str) -> bool {
        internal_address(text.parse().unwrap())
    }

    #[test]
    fn every_special_purpose_ipv4_block_is_internal() {
        for address in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.10",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(internal(address), "{address} passed");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass() {
        for address in
            ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.32.0.1", "198.20.0.1", "223.255.255.255"]
        {
            assert!(!internal(address), "{address} refused");
        }
    }

    #[test]
    fn every_special_purpose_ipv6_block_is_internal() {
        for address in [
            "::",
            "::1",
            "::127.0.0.1",      // IPv4-compatible (deprecated)
            "::8.8.8.8",        // IPv4-compatible, whatever it holds
            "::ffff:127.0.0.1", // IPv4-mapped
            "::ffff:10.0.0.1",
            "::ffff:0:7f00:1",    // IPv4-translated (RFC 2765)
            "64:ff9b::127.0.0.1", // NAT64 of loopback
            "64:ff9b::10.1.2.3",  // NAT64 of private
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::8.8.8.8", // NAT64 local-use prefix
            "100::1",             // discard-only
            "2001::1",            // Teredo
            "2001:2::1",          // benchmarking
            "2001:db8::1",        // documentation
            "2002:7f00:1::1",     // 6to4 of loopback
            "2002:c0a8:101::1",   // 6to4 of 192.168.1.1
            "2002:a00:1::",       // 6to4 of 10.0.0.1
            "3fff::1",            // documentation
            "5f00::1",            // SRv6 SIDs
            "fc00::1",            // unique-local
            "fd12:3456::1",
            "fe80::1", // link-local
            "fec0::1", // site-local (deprecated)
            "feff::1",
            "ff02::1", // multicast
            "ff0e::1",
        ] {
            assert!(internal(address), "{address} passed");
        }
    }

    #[test]
    fn public_ipv6_addresses_pass() {
        for address in
            ["2606:4700:4700::1111", "2a00:1450:4001::200e", "64:ff9b::8.8.8.8", "2002:808:808::1", "2001:200::1"]
        {
            assert!(!internal(address), "{address} refused");
        }
    }

    #[test]
    fn endpoint_urls_at_internal_addresses_are_refused_unless_allowed() {
        for url in [
            "https://100.64.0.1/hooks",
            "https://0.0.0.0/hooks",
            "https://198.18.0.1/hooks",
            "https://224.0.0.1/hooks",
            "https://240.0.0.1/hooks",
            "https://192.0.0.8/hooks",
            "https://2130706433/hooks", // 127.0.0.1, as WHATWG URLs read a bare number
            "https://[::127.0.0.1]/hooks",
            "https://[::ffff:0:7f00:1]/hooks",
            "https://[::ffff:7f00:1]/hooks",
            "https://[64:ff9b::a00:1]/hooks",
            "https://[2002:a00:1::1]/hooks",
            "https://[fec0::1]/hooks",
            "https://[fd00::1]/hooks",
        ] {
            let mut checks = crate::validate::Checks::new();
            assert!(checks.webhook_url("url", url, false).is_none(), "{url} passed");
            let mut checks = crate::validate::Checks::new();
            assert!(checks.webhook_url("url", url, true).is_some(), "{url} refused where allowed");
        }
        let mut checks = crate::validate::Checks::new();
        assert!(checks.webhook_url("url", "https://[64:ff9b::808:808]/hooks", false).is_some());
    }
}
