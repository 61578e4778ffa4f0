//! What the gateway logs about requests, apart from what they change: the access line
//! (`--access-log`), whose client address comes from `X-Forwarded-For` only when the peer is
//! a trusted front (`--trusted-proxy`), and the refusal lines, at INFO but rate-limited, so a
//! flood of refused requests cannot fill the disk. Pure: no I/O, time passed in.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The peers whose `X-Forwarded-For` is believed (`--trusted-proxy`): addresses and CIDR
/// ranges. Empty by default: the header is then ignored, since any client can send it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses (`127.0.0.1`, `::1`) and ranges
    /// (`10.0.0.0/8`, `fd00::/8`); an empty list trusts no one.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut ranges = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (address, bits) = match item.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (item, None),
            };
            let address: IpAddr = address.parse().map_err(|_| {
                format!("{item:?} is not an IP address or a range such as 10.0.0.0/8")
            })?;
            let width = if address.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => width,
                Some(bits) => match bits.parse::<u8>() {
                    Ok(bits) if bits <= width => bits,
                    _ => return Err(format!("{item:?}: the prefix length must be 0 to {width}")),
                },
            };
            ranges.push((address, bits));
        }
        Ok(TrustedProxies(ranges))
    }

    /// True when no peer is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if `address` is one of the trusted peers.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0
            .iter()
            .any(|&(range, bits)| match (canonical(range), address) {
                (IpAddr::V4(range), IpAddr::V4(a)) => {
                    prefix(u128::from(u32::from(range)) << 96, bits)
                        == prefix(u128::from(u32::from(a)) << 96, bits)
                }
                (IpAddr::V6(range), IpAddr::V6(a)) => {
                    prefix(u128::from(range), bits) == prefix(u128::from(a), bits)
                }
                _ => false,
            })
    }

    /// The client a request came from: its peer, or, when the peer is trusted, the address
    /// `X-Forwarded-For` gives (each of `forwarded` is one header line). The list is read
    /// from the right, past the trusted proxies, so a client cannot put an address of its
    /// choosing in front of the one its proxy appended. A value that is not an address list
    /// is ignored.
    pub fn client<'h>(
        &self,
        peer: Option<SocketAddr>,
        forwarded: impl Iterator<Item = &'h str>,
    ) -> Client {
        let Some(peer) = peer else {
            return Client {
                peer,
                forwarded: None,
            };
        };
        if !self.contains(peer.ip()) {
            return Client {
                peer: Some(peer),
                forwarded: None,
            };
        }
        let hops: Option<Vec<IpAddr>> = forwarded
            .flat_map(|line| line.split(','))
            .map(|hop| hop.trim().parse().ok())
            .collect();
        let forwarded = hops.and_then(|hops| {
            let last = hops.iter().rev().find(|hop| !self.contains(**hop));
            last.or(hops.first()).copied()
        });
        Client {
            peer: Some(peer),
            forwarded,
        }
    }
}

impl fmt::Display for TrustedProxies {
    /// The list as `--trusted-proxy` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(address, bits)) in self.0.iter().enumerate() {
            let width = if address.is_ipv4() { 32 } else { 128 };
            let comma = if i > 0 { "," } else { "" };
            match bits {
                b if b == width => write!(f, "{comma}{address}")?,
                b => write!(f, "{comma}{address}/{b}")?,
            }
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) as the IPv4 address they are.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix(bits_from_the_top: u128, length: u8) -> u128 {
    match length {
        0 => 0,
        n => bits_from_the_top >> (128 - u32::from(n)),
    }
}

/// Where a request came from, as the access log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The connection's peer (the front, behind one).
    pub peer: Option<SocketAddr>,
    /// The client a trusted front named in `X-Forwarded-For`.
    pub forwarded: Option<IpAddr>,
}

impl fmt::Display for Client {
    /// `203.0.113.7 via 127.0.0.1:51234` behind a trusted front, else the peer (`-` if none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.forwarded, self.peer) {
            (Some(client), Some(peer)) => write!(f, "{client} via {peer}"),
            (_, Some(peer)) => write!(f, "{peer}"),
            (_, None) => f.write_str("-"),
        }
    }
}

/// One access line: `CLIENT METHOD URL STATUS BYTES bytes MS ms token=NAME agent="UA"`.
/// `took` is from the request's arrival to its answer written: a long-poll's time parked
/// included. The token is named, never shown; the user agent is quoted with its escapes.
pub struct AccessLine<'a> {
    /// Where it came from.
    pub client: Client,
    /// The request's method.
    pub method: &'a str,
    /// Its path and query.
    pub url: &'a str,
    /// The answer's status.
    pub status: u16,
    /// Bytes of body sent.
    pub bytes: usize,
    /// From arrival to the answer written.
    pub took: Duration,
    /// The name of the token it presented, if it presented a known one.
    pub token: Option<&'a str>,
    /// Its `User-Agent`.
    pub user_agent: Option<&'a str>,
}

impl fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} bytes {:.1} ms token={} agent=",
            self.client,
            self.method,
            self.url,
            self.status,
            self.bytes,
            self.took.as_secs_f64() * 1e3,
            self.token.unwrap_or("-"),
        )?;
        match self.user_agent {
            Some(agent) => write!(f, "{agent:?}"),
            None => f.write_str("-"),
        }
    }
}

/// How many refusal lines may be written at once, then how often one more may.
pub const REFUSALS_BURST: u32 = 10;
/// See [`REFUSALS_BURST`].
pub const REFUSALS_EVERY: Duration = Duration::from_secs(1);

/// A token bucket for refusal lines: [`REFUSALS_BURST`] at once, then one every
/// [`REFUSALS_EVERY`]; the ones left out are counted, and the next line written says how many.
/// At most 86,400 lines a day, however many requests are refused.
#[derive(Debug)]
pub struct Refusals {
    tokens: u32,
    refilled: Option<Instant>,
    left_out: u64,
}

impl Default for Refusals {
    fn default() -> Refusals {
        Refusals {
            tokens: REFUSALS_BURST,
            refilled: None,
            left_out: 0,
        }
    }
}

impl Refusals {
    /// Whether a refusal seen at `now` may be logged; `Some(n)`: yes, `n` being how many were
    /// left out since the last one logged.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let since = *self.refilled.get_or_insert(now);
        let earned = now.saturating_duration_since(since).as_nanos() / REFUSALS_EVERY.as_nanos();
        if earned > 0 {
            self.tokens = (u128::from(self.tokens) + earned).min(u128::from(REFUSALS_BURST)) as u32;
            self.refilled = Some(since + REFUSALS_EVERY * earned.min(u128::from(u32::MAX)) as u32);
        }
        if self.tokens == 0 {
            self.left_out += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

#[cfg(test)]
mod tests;
