//! The watch over an event stream (`GET /nodes?status=all&changes=1&stream=1&index=V&epoch=E`):
//! one request, and the gateway sends each delta answer as a Server-Sent Event on it as the
//! registry changes (`id: VERSION`, `data: <delta answer>`), and a comment line (`: keepalive`)
//! after 25 s of silence. Each event goes through [`Watcher::take`] as a long-poll's answer
//! would.
//!
//! - An answer that is not an event stream (a gateway without streams ignores `stream=1` and
//!   answers the delta answer or the list at once; a proxy may strip the stream) is taken as a
//!   long-poll's answer, and the watch long-polls that gateway from then on: it asks for a stream
//!   again once another gateway answers, or after [`RETRY_STREAMS`].
//! - The stream has no deadline, but a read that waits [`SILENCE`] for a byte (two keepalives
//!   missed) ends it: the gateway, or the path to it, is gone. A stream silent from its start
//!   (not one keepalive: a proxy that buffers it whole) is taken as no stream, as above.
//! - A stream that ends (the gateway stopped, or ended a reader too slow) is opened again at
//!   once from the last index; one that ended having sent nothing pauses first, with the
//!   client's growing backoff, and so does one that failed: never a spin.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::error::ClientError;
use crate::client::transport::{Events, Opened, Reply, WatchAgent};

use super::delta::{Answer, Mode};
use super::{Cursor, Watcher, escape, retry_pause};

/// The longest silence of a live stream: the gateway sends a keepalive after 25 s without an
/// event (its `KEEPALIVE`); two missed, and some slack, and the stream is taken for dead.
pub(super) const SILENCE: Duration = Duration::from_secs(60);
/// How long a gateway that answered a stream request with something else is long-polled
/// before it is asked for a stream again (it may have been upgraded meanwhile).
pub(super) const RETRY_STREAMS: Duration = Duration::from_secs(600);
/// Largest event read: as large as the largest answer the client reads.
const MAX_EVENT_BYTES: u64 = crate::api::limits::ANSWER_BYTES;

/// The stream request for `cursor`: every node (as [`super::delta_path`]), the events after
/// the index of its run, or everything from the start.
pub(super) fn stream_path(cursor: &Cursor) -> String {
    let mut path = "/nodes?status=all&changes=1&stream=1".to_owned();
    if let Cursor::At { index, epoch } = cursor {
        path.push_str(&format!("&index={index}&epoch={}", escape(epoch)));
    }
    path
}

/// Opens a stream from `watcher`'s cursor on `agent` and feeds the view from its events until
/// it ends, fails, or an event asks for a pause or another request (a full answer to start
/// over from, another run twice in a row). Returns how long to pause before the next request,
/// or `None` once the watch is stopped. `reading` is true while the thread waits for the
/// stream's next bytes.
pub(super) fn follow(
    watcher: &mut Watcher<'_>,
    agent: &WatchAgent,
    reading: &AtomicBool,
) -> Option<Duration> {
    let shared = watcher.shared;
    let request = stream_path(&watcher.cursor);
    let opened = shared.open_stream::<Answer>(agent, &request, watcher.pause, SILENCE);
    let from = shared.transport.current().to_owned();
    let events = match opened {
        Ok(Opened::Events(events)) => events,
        Ok(Opened::Answer(reply)) => {
            log::info!(
                "the gateway {from} answers no event stream: the watch long-polls it (and asks \
                 again after {} min or once another gateway answers)",
                RETRY_STREAMS.as_secs() / 60
            );
            watcher.no_streams = Some((from.clone(), Instant::now()));
            return watcher.take(Ok(reply), &from, None);
        }
        // A gateway that refuses the request itself (a 400): long-polls, as above.
        Err(e @ ClientError::Gateway { status: 400, .. }) => {
            log::info!("the gateway {from} refused the event stream ({e}): long-polls");
            watcher.no_streams = Some((from.clone(), Instant::now()));
            return watcher.take(Err(e), &from, None);
        }
        Err(e) => return watcher.take(Err(e), &from, None),
    };
    let Events {
        base, epoch, body, ..
    } = events;
    log::debug!("the watch follows the event stream of {base}");
    let opened_at = Instant::now();
    let mut body = BufReader::new(body);
    let mut heard = false;
    let mut alive = false;
    loop {
        reading.store(true, Ordering::SeqCst);
        let next = next_event(&mut body, MAX_EVENT_BYTES, &mut alive);
        reading.store(false, Ordering::SeqCst);
        if !(watcher.pause)(Duration::ZERO) {
            return None; // Stopped: its agent was shut down under the read; record nothing.
        }
        match next {
            Ok(Some(event)) => {
                heard = true;
                let reply = answer(&base, event, epoch.clone());
                let rest = watcher.take(reply, &base, None)?;
                // Read on while the events apply; anything else is a new request.
                let reading_on = rest.is_zero()
                    && matches!(watcher.cursor, Cursor::At { .. })
                    && watcher.mode == Mode::Ask;
                if !reading_on {
                    return Some(rest);
                }
            }
            Ok(None) => {
                log::debug!("the gateway {base} ended the event stream");
                // One that ends without a word, soon, over and over (a proxy that closes it)
                // is not opened again at once every time.
                if heard || opened_at.elapsed() >= SILENCE {
                    watcher.quick = 0;
                    return Some(Duration::ZERO);
                }
                watcher.quick += 1;
                return Some(retry_pause(shared, watcher.quick));
            }
            Err(e) => {
                if !alive && timed_out(&e) {
                    log::warn!(
                        "the event stream of {base} stayed silent from its start (a proxy that \
                         buffers it?): the watch long-polls it"
                    );
                    watcher.no_streams = Some((base.clone(), Instant::now()));
                }
                let e = read_error(&base, e);
                watcher.failures += 1;
                log::warn!(
                    "the event stream failed ({} in a row): {e}",
                    watcher.failures
                );
                return Some(retry_pause(shared, watcher.failures));
            }
        }
    }
}

/// An event read as the answer a long-poll would have had: its `id` is the index.
fn answer(base: &str, event: Event, epoch: Option<String>) -> Result<Reply<Answer>, ClientError> {
    let value: Answer =
        serde_json::from_str(&event.data).map_err(|e| ClientError::InvalidResponse {
            address: base.to_owned(),
            reason: format!("an event that is not a delta answer: {e}"),
        })?;
    let index = event
        .id
        .and_then(|id| id.trim().parse().ok())
        .or(match &value {
            Answer::Changes(changes) => Some(changes.registry_version),
            Answer::List(list) => Some(list.registry_version),
        });
    Ok(Reply {
        value: Some(value),
        etag: None,
        index,
        epoch,
    })
}

/// True for a read that waited [`SILENCE`] (ureq's timeout, wrapped in the `io::Error`).
fn timed_out(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) || error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
}

fn read_error(base: &str, error: io::Error) -> ClientError {
    if timed_out(&error) {
        return ClientError::Unreachable {
            address: base.to_owned(),
            reason: format!(
                "the event stream was silent for {} s (not even a keepalive)",
                SILENCE.as_secs()
            ),
        };
    }
    match error.kind() {
        io::ErrorKind::InvalidData => ClientError::InvalidResponse {
            address: base.to_owned(),
            reason: error.to_string(),
        },
        _ => ClientError::Unreachable {
            address: base.to_owned(),
            reason: format!("the event stream broke: {error}"),
        },
    }
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Event {
    /// Its `id:` field, if it had one.
    pub(super) id: Option<String>,
    /// Its `data:` lines, joined with `\n`.
    pub(super) data: String,
}

/// Reads the next event with data from `reader` (comments, such as keepalives, and events
/// without data skipped); `None` at the end of the stream (an event cut short by it is
/// dropped). An event larger than `limit` bytes, or not UTF-8, is an `InvalidData` error.
/// Sets `alive` once a whole line was read.
pub(super) fn next_event(
    reader: &mut impl BufRead,
    limit: u64,
    alive: &mut bool,
) -> io::Result<Option<Event>> {
    let mut data: Option<String> = None;
    let mut id = None;
    let mut line = Vec::new();
    let mut size = 0u64;
    loop {
        line.clear();
        let budget = limit.saturating_sub(size) + 1;
        let n = reader.by_ref().take(budget).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        size += n as u64;
        if line.last() != Some(&b'\n') {
            if n as u64 >= budget {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an event larger than {limit} bytes"),
                ));
            }
            return Ok(None);
        }
        *alive = true;
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            match data.take() {
                Some(data) => return Ok(Some(Event { id, data })),
                None => {
                    id = None;
                    size = 0;
                    continue;
                }
            }
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        let text = || {
            std::str::from_utf8(value)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                .map(str::to_owned)
        };
        match field {
            b"data" => {
                let value = text()?;
                match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(&value);
                    }
                    None => data = Some(value),
                }
            }
            b"id" => id = Some(text()?),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &[u8], limit: u64) -> Vec<io::Result<Option<Event>>> {
        let mut reader = io::BufReader::with_capacity(7, text);
        let mut all = Vec::new();
        loop {
            let next = next_event(&mut reader, limit, &mut false);
            let end = !matches!(next, Ok(Some(_)));
            all.push(next);
            if end {
                return all;
            }
        }
    }

    fn event(id: Option<&str>, data: &str) -> Event {
        Event {
            id: id.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_are_read_and_keepalives_and_other_fields_skipped() {
        let text = b": keepalive\n\nid: 5\ndata: {\"a\":1}\n\n: keepalive\n\n\
                     retry: 100\nid:6\r\ndata:x\r\ndata: y\r\n\r\nevent: other\n\n";
        let read = events(text, 1000);
        let read: Vec<_> = read.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            read,
            vec![
                Some(event(Some("5"), "{\"a\":1}")),
                Some(event(Some("6"), "x\ny")),
                None
            ]
        );
    }

    #[test]
    fn an_event_cut_short_by_the_end_is_dropped() {
        let read = events(b"id: 5\ndata: {\"a\"", 1000);
        assert!(matches!(read.as_slice(), [Ok(None)]));
        let read = events(b"id: 5\ndata: {}\n", 1000);
        assert!(matches!(read.as_slice(), [Ok(None)]));
    }

    #[test]
    fn an_event_over_the_limit_or_not_utf8_is_an_error() {
        let long = format!("data: {}\n\n", "x".repeat(100));
        let read = events(long.as_bytes(), 50);
        assert!(matches!(read.as_slice(), [Err(e)] if e.kind() == io::ErrorKind::InvalidData));
        // The limit is per event, not per stream.
        let many = "data: 12345\n\n".repeat(20);
        assert_eq!(events(many.as_bytes(), 50).len(), 21);
        let read = events(b"data: \xff\n\n", 50);
        assert!(matches!(read.as_slice(), [Err(e)] if e.kind() == io::ErrorKind::InvalidData));
    }

    #[test]
    fn the_stream_request_sends_the_cursor_back_without_a_wait() {
        assert_eq!(
            stream_path(&Cursor::Start),
            "/nodes?status=all&changes=1&stream=1"
        );
        let at = Cursor::At {
            index: 42,
            epoch: "a b".to_owned(),
        };
        assert_eq!(
            stream_path(&at),
            "/nodes?status=all&changes=1&stream=1&index=42&epoch=a%20b"
        );
    }
}
