//! DHCP options (RFC 2132): the TLV areas of a message, decoded into typed fields and encoded back.

use std::net::Ipv4Addr;

use super::packet::DecodeError;

/// Option codes this crate reads or writes.
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const MTU: u8 = 26;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// One classless static route (RFC 3442).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

/// The options of a message other than the message type (which `Message` holds) and the
/// overload flag (which only steers decoding). A field is `None` or empty when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<Vec<u8>>,
    pub domain_name: Option<Vec<u8>>,
    pub mtu: Option<u16>,
    pub requested_ip: Option<Ipv4Addr>,
    /// Seconds; 0xffffffff means infinite (RFC 2132 §9.2).
    pub lease_time: Option<u32>,
    pub server_id: Option<Ipv4Addr>,
    pub parameter_request_list: Vec<u8>,
    pub max_message_size: Option<u16>,
    /// T1, seconds.
    pub renewal_time: Option<u32>,
    /// T2, seconds.
    pub rebinding_time: Option<u32>,
    pub client_id: Option<Vec<u8>>,
    pub classless_routes: Vec<Route>,
    /// Every other option, by code, in the order first seen.
    pub unknown: Vec<(u8, Vec<u8>)>,
}

/// Option values by code, each code's instances concatenated in order (RFC 3396), so a long
/// value split over several instances, or over the options, `file` and `sname` areas, is whole.
#[derive(Debug, Default)]
pub(crate) struct RawOptions(Vec<(u8, Vec<u8>)>);

impl RawOptions {
    /// Adds the options of one area; stops at END, and accepts an area without one because
    /// `sname` and `file` are often padded with zeros (PAD) to their end instead.
    pub(crate) fn parse_area(&mut self, area: &[u8]) -> Result<(), DecodeError> {
        let mut rest = area;
        while let Some((&option, tail)) = rest.split_first() {
            match option {
                code::PAD => rest = tail,
                code::END => return Ok(()),
                _ => {
                    let (&len, tail) = tail
                        .split_first()
                        .ok_or(DecodeError::OptionOverrun { code: option })?;
                    let len = usize::from(len);
                    let value = tail
                        .get(..len)
                        .ok_or(DecodeError::OptionOverrun { code: option })?;
                    self.append(option, value);
                    rest = tail.get(len..).unwrap_or_default();
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, option: u8, value: &[u8]) {
        match self.0.iter_mut().find(|(c, _)| *c == option) {
            Some((_, existing)) => existing.extend_from_slice(value),
            None => self.0.push((option, value.to_vec())),
        }
    }

    pub(crate) fn take(&mut self, option: u8) -> Option<Vec<u8>> {
        let index = self.0.iter().position(|(c, _)| *c == option)?;
        Some(self.0.remove(index).1)
    }

    /// Interprets the collected values; every fixed-size option must have its exact size.
    pub(crate) fn into_options(mut self) -> Result<Options, DecodeError> {
        let mut options = Options {
            subnet_mask: self
                .take(code::SUBNET_MASK)
                .map(|v| addr(code::SUBNET_MASK, &v))
                .transpose()?,
            routers: self
                .take(code::ROUTER)
                .map(|v| addrs(code::ROUTER, &v))
                .transpose()?
                .unwrap_or_default(),
            dns: self
                .take(code::DNS)
                .map(|v| addrs(code::DNS, &v))
                .transpose()?
                .unwrap_or_default(),
            hostname: self.take(code::HOSTNAME),
            domain_name: self.take(code::DOMAIN_NAME),
            mtu: self
                .take(code::MTU)
                .map(|v| u16_value(code::MTU, &v))
                .transpose()?,
            requested_ip: self
                .take(code::REQUESTED_IP)
                .map(|v| addr(code::REQUESTED_IP, &v))
                .transpose()?,
            lease_time: self
                .take(code::LEASE_TIME)
                .map(|v| u32_value(code::LEASE_TIME, &v))
                .transpose()?,
            server_id: self
                .take(code::SERVER_ID)
                .map(|v| addr(code::SERVER_ID, &v))
                .transpose()?,
            parameter_request_list: self.take(code::PARAMETER_REQUEST_LIST).unwrap_or_default(),
            max_message_size: self
                .take(code::MAX_MESSAGE_SIZE)
                .map(|v| u16_value(code::MAX_MESSAGE_SIZE, &v))
                .transpose()?,
            renewal_time: self
                .take(code::RENEWAL_TIME)
                .map(|v| u32_value(code::RENEWAL_TIME, &v))
                .transpose()?,
            rebinding_time: self
                .take(code::REBINDING_TIME)
                .map(|v| u32_value(code::REBINDING_TIME, &v))
                .transpose()?,
            client_id: self.take(code::CLIENT_ID),
            classless_routes: self
                .take(code::CLASSLESS_ROUTES)
                .map(|v| routes(&v))
                .transpose()?
                .unwrap_or_default(),
            unknown: Vec::new(),
        };
        options.unknown = self.0;
        Ok(options)
    }
}

fn addr(option: u8, value: &[u8]) -> Result<Ipv4Addr, DecodeError> {
    let octets: [u8; 4] = value.try_into().map_err(|_| DecodeError::BadOptionLength {
        code: option,
        len: value.len(),
    })?;
    Ok(Ipv4Addr::from(octets))
}

fn addrs(option: u8, value: &[u8]) -> Result<Vec<Ipv4Addr>, DecodeError> {
    if value.is_empty() || !value.len().is_multiple_of(4) {
        return Err(DecodeError::BadOptionLength {
            code: option,
            len: value.len(),
        });
    }
    value.chunks_exact(4).map(|c| addr(option, c)).collect()
}

fn u16_value(option: u8, value: &[u8]) -> Result<u16, DecodeError> {
    let bytes: [u8; 2] = value.try_into().map_err(|_| DecodeError::BadOptionLength {
        code: option,
        len: value.len(),
    })?;
    Ok(u16::from_be_bytes(bytes))
}

fn u32_value(option: u8, value: &[u8]) -> Result<u32, DecodeError> {
    let bytes: [u8; 4] = value.try_into().map_err(|_| DecodeError::BadOptionLength {
        code: option,
        len: value.len(),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// RFC 3442: each route is a prefix length, the significant octets of the destination, and
/// the gateway. Bits past the prefix length are cleared, so a route has one encoding.
fn routes(value: &[u8]) -> Result<Vec<Route>, DecodeError> {
    let bad = || DecodeError::BadClasslessRoutes { len: value.len() };
    let mut out = Vec::new();
    let mut rest = value;
    while let Some((&prefix_len, tail)) = rest.split_first() {
        if prefix_len > 32 {
            return Err(bad());
        }
        let significant = usize::from(prefix_len.div_ceil(8));
        let dest = tail.get(..significant).ok_or_else(bad)?;
        let gateway = tail.get(significant..significant + 4).ok_or_else(bad)?;
        let mut octets = [0u8; 4];
        octets
            .get_mut(..significant)
            .ok_or_else(bad)?
            .copy_from_slice(dest);
        out.push(Route {
            destination: Ipv4Addr::from(u32::from_be_bytes(octets) & prefix_mask(prefix_len)),
            prefix_len,
            gateway: addr(code::CLASSLESS_ROUTES, gateway)?,
        });
        rest = tail.get(significant + 4..).unwrap_or_default();
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The netmask of a prefix length, as a host-order u32.
pub(crate) fn prefix_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl Options {
    /// Appends the options as TLVs, in code order, unknown ones last. A value longer than 255
    /// bytes is split over several instances of its option (RFC 3396).
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let ip_list = |v: &[Ipv4Addr]| v.iter().flat_map(|a| a.octets()).collect::<Vec<u8>>();
        if let Some(mask) = self.subnet_mask {
            put(out, code::SUBNET_MASK, &mask.octets());
        }
        if !self.routers.is_empty() {
            put(out, code::ROUTER, &ip_list(&self.routers));
        }
        if !self.dns.is_empty() {
            put(out, code::DNS, &ip_list(&self.dns));
        }
        if let Some(name) = &self.hostname {
            put(out, code::HOSTNAME, name);
        }
        if let Some(name) = &self.domain_name {
            put(out, code::DOMAIN_NAME, name);
        }
        if let Some(mtu) = self.mtu {
            put(out, code::MTU, &mtu.to_be_bytes());
        }
        if let Some(ip) = self.requested_ip {
            put(out, code::REQUESTED_IP, &ip.octets());
        }
        if let Some(secs) = self.lease_time {
            put(out, code::LEASE_TIME, &secs.to_be_bytes());
        }
        if let Some(ip) = self.server_id {
            put(out, code::SERVER_ID, &ip.octets());
        }
        if !self.parameter_request_list.is_empty() {
            put(
                out,
                code::PARAMETER_REQUEST_LIST,
                &self.parameter_request_list,
            );
        }
        if let Some(size) = self.max_message_size {
            put(out, code::MAX_MESSAGE_SIZE, &size.to_be_bytes());
        }
        if let Some(secs) = self.renewal_time {
            put(out, code::RENEWAL_TIME, &secs.to_be_bytes());
        }
        if let Some(secs) = self.rebinding_time {
            put(out, code::REBINDING_TIME, &secs.to_be_bytes());
        }
        if let Some(id) = &self.client_id {
            put(out, code::CLIENT_ID, id);
        }
        if !self.classless_routes.is_empty() {
            let mut value = Vec::new();
            for route in &self.classless_routes {
                let significant = usize::from(route.prefix_len.min(32).div_ceil(8));
                value.push(route.prefix_len);
                value.extend(route.destination.octets().iter().take(significant));
                value.extend(route.gateway.octets());
            }
            put(out, code::CLASSLESS_ROUTES, &value);
        }
        for (option, value) in &self.unknown {
            put(out, *option, value);
        }
    }
}

/// Writes one option, split into 255-byte instances; an empty value is one empty instance.
pub(crate) fn put(out: &mut Vec<u8>, option: u8, value: &[u8]) {
    if value.is_empty() {
        out.extend([option, 0]);
        return;
    }
    for chunk in value.chunks(255) {
        out.push(option);
        out.push(chunk.len() as u8); // chunks(255): the length fits
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(area: &[u8]) -> Result<Options, DecodeError> {
        let mut raw = RawOptions::default();
        raw.parse_area(area)?;
        raw.into_options()
    }

    #[test]
    fn concatenates_repeated_instances_of_an_option() {
        // Two DNS instances of one address each make one list of two (RFC 3396).
        let options = parse(&[6, 4, 10, 0, 2, 3, 6, 4, 1, 1, 1, 1, 255]).unwrap();
        assert_eq!(
            options.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(1, 1, 1, 1)]
        );
    }

    #[test]
    fn rejects_an_option_running_past_the_area() {
        assert_eq!(
            parse(&[15, 10, b'a', b'b']),
            Err(DecodeError::OptionOverrun { code: 15 })
        );
        assert_eq!(parse(&[15]), Err(DecodeError::OptionOverrun { code: 15 }));
    }

    #[test]
    fn rejects_a_fixed_size_option_of_the_wrong_size() {
        assert_eq!(
            parse(&[51, 3, 0, 0, 1, 255]),
            Err(DecodeError::BadOptionLength { code: 51, len: 3 })
        );
        assert_eq!(
            parse(&[3, 6, 1, 2, 3, 4, 5, 6]),
            Err(DecodeError::BadOptionLength { code: 3, len: 6 })
        );
        assert_eq!(
            parse(&[26, 0]),
            Err(DecodeError::BadOptionLength { code: 26, len: 0 })
        );
    }

    #[test]
    fn stops_at_end_and_skips_pads() {
        let options = parse(&[0, 0, 26, 2, 5, 220, 255, 1, 99]).unwrap();
        assert_eq!(options.mtu, Some(1500));
        assert_eq!(options.subnet_mask, None, "bytes after END are not options");
    }

    #[test]
    fn parses_classless_routes_and_clears_host_bits() {
        // 10.0.0.0/8 via 10.0.2.2, 0.0.0.0/0 via 10.0.2.1, 192.168.1.0/24 (written .1) via 10.0.2.3.
        let value = [
            8, 10, 10, 0, 2, 2, 0, 10, 0, 2, 1, 24, 192, 168, 1, 10, 0, 2, 3,
        ];
        let mut area = vec![121, value.len() as u8];
        area.extend(value);
        let routes = parse(&area).unwrap().classless_routes;
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].destination, Ipv4Addr::new(10, 0, 0, 0));
        assert_eq!(
            (routes[1].prefix_len, routes[1].gateway),
            (0, Ipv4Addr::new(10, 0, 2, 1))
        );
        assert_eq!(routes[2].destination, Ipv4Addr::new(192, 168, 1, 0));
    }

    #[test]
    fn rejects_a_classless_route_with_a_prefix_over_32_or_cut_short() {
        assert!(matches!(
            parse(&[121, 5, 33, 0, 0, 0, 0]),
            Err(DecodeError::BadClasslessRoutes { .. })
        ));
        assert!(matches!(
            parse(&[121, 4, 8, 10, 0, 0]),
            Err(DecodeError::BadClasslessRoutes { .. })
        ));
    }

    #[test]
    fn encodes_a_long_value_as_several_instances_that_decode_whole() {
        let options = Options {
            domain_name: Some(vec![b'x'; 300]),
            ..Options::default()
        };
        let mut area = Vec::new();
        options.encode_into(&mut area);
        assert_eq!((area[0], area[1], area[257], area[258]), (15, 255, 15, 45));
        assert_eq!(parse(&area).unwrap(), options);
    }

    #[test]
    fn keeps_unknown_options() {
        let options = parse(&[224, 3, 1, 2, 3, 255]).unwrap();
        assert_eq!(options.unknown, [(224, vec![1, 2, 3])]);
    }
}
