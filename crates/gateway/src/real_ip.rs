//! Who the client is when the gateway sits behind load balancers: the address a trusted proxy
//! reports in `X-Forwarded-For`, found as nginx's `real_ip_recursive` finds it.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The client's address: the TCP `peer`, unless the peer is one of `trusted` proxies; then the
/// nearest address in `X-Forwarded-For` (read from the right, the end each proxy appends to)
/// that is not a trusted proxy. What a client writes into the header itself lies further left
/// than the address its first trusted proxy appended, so it is never reached.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|network| network.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop that is not an address ends the walk: nothing left of it can be trusted.
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let claims = headers(&["1.2.3.4"]);
        assert_eq!(
            client_address(ip("203.0.113.9"), &claims, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("203.0.113.9"), &claims, &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        // The client forged "1.2.3.4"; the ingress appended the real peer, 198.51.100.7;
        // an inner proxy (10.0.0.5) appended the ingress.
        let chain = headers(&["1.2.3.4, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(
            client_address(ip("10.1.1.1"), &chain, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("::1"), &headers(&["2001:db8::1"]), &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn a_chain_of_trusted_hops_or_garbage_stops_at_the_last_address_known() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers(&["10.0.0.2"]), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers(&[]), &trusted),
            ip("10.0.0.1")
        );
        let garbage = headers(&["203.0.113.1, unknown, 10.0.0.3"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &garbage, &trusted),
            ip("10.0.0.3")
        );
    }
}
