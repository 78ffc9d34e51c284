//! Events from the engine to the editor.
//!
//! Engine threads push [`Event`]s into one process-wide [`EventBus`]. The bus
//! owns a non-blocking pipe: the first event pushed after the reader has
//! caught up writes a single byte, so a burst of events costs one wakeup.
//! Neovim watches the read end with a libuv poll handle and calls
//! [`EventBus::drain`] with a cap, so a flood of events can never stall the
//! editor's main loop for long; when events remain after a capped drain the
//! caller schedules another drain itself (no byte is written while the
//! reader is known to be behind).
//!
//! Nothing here touches Lua. Each event is turned into JSON text by the
//! thread that pushes it, and a drain hands over one JSON array: the
//! editor's thread only joins texts and frees one string per event. (Freeing
//! a `serde_json::Value` tree built by an engine thread took glibc's lock on
//! that thread's heap arena for each of its nodes, and the editor's thread
//! waited there while the engine thread still allocated after a sync's end.)

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{pipe2, read, write};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// One message for the editor: `id` names the request it answers (0 for
/// broadcast events), `name` says what happened, `data` carries the details.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: u64,
    pub name: String,
    pub data: Value,
}

impl Event {
    pub fn new(id: u64, name: impl Into<String>, data: Value) -> Self {
        Event {
            id,
            name: name.into(),
            data,
        }
    }
}

struct Queue {
    /// Each event as a JSON object, oldest first.
    events: VecDeque<String>,
    /// True from the moment a wakeup byte is written until a drain empties
    /// the queue: while set, pushes do not write more bytes.
    armed: bool,
    closed: bool,
}

/// A multi-producer queue with a pollable wakeup file descriptor.
pub struct EventBus {
    queue: Mutex<Queue>,
    read_end: OwnedFd,
    write_end: OwnedFd,
}

/// What one capped drain returned.
pub struct Drained {
    /// The events taken, as a JSON array of [`Event`] objects.
    pub json: String,
    /// How many events `json` holds.
    pub count: usize,
    /// Events are still queued; the caller must drain again.
    pub more: bool,
}

impl EventBus {
    pub fn new() -> Result<Self> {
        let (read_end, write_end) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .map_err(|e| Error::io("cannot create the event pipe", e))?;
        Ok(EventBus {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                armed: false,
                closed: false,
            }),
            read_end,
            write_end,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.read_end.as_raw_fd()
    }

    /// Queues an event; dropped silently once the bus is closed (shutdown).
    pub fn push(&self, event: Event) {
        // Encoded before the lock is taken. An Event always encodes (its
        // map keys are strings), so the error branch is never taken.
        let Ok(text) = serde_json::to_string(&event) else {
            return;
        };
        drop(event);
        let mut q = self.queue.lock();
        if q.closed {
            return;
        }
        q.events.push_back(text);
        if !q.armed {
            q.armed = true;
            // A full pipe (EAGAIN) still means "readable", which is all the
            // reader needs; any other error leaves the event queued for the
            // next successful wakeup.
            let _ = write(self.write_end.as_fd(), b"!");
        }
    }

    /// Takes at most `max` events, oldest first.
    pub fn drain(&self, max: usize) -> Drained {
        self.clear_wakeups();
        let mut q = self.queue.lock();
        let count = max.max(1).min(q.events.len());
        let taken: Vec<String> = q.events.drain(..count).collect();
        let more = !q.events.is_empty();
        if !more {
            q.armed = false;
        }
        drop(q);
        let mut json = String::with_capacity(taken.iter().map(|t| t.len() + 1).sum::<usize>() + 2);
        json.push('[');
        for (i, text) in taken.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(text);
        }
        json.push(']');
        Drained { json, count, more }
    }

    /// Stops delivery: queued events are dropped and later pushes ignored.
    pub fn close(&self) {
        let mut q = self.queue.lock();
        q.closed = true;
        q.events.clear();
    }

    fn clear_wakeups(&self) {
        let mut buf = [0u8; 64];
        loop {
            match read(self.read_end.as_fd(), &mut buf) {
                Ok(n) if n == buf.len() => continue,
                Err(Errno::EINTR) => continue,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use serde_json::json;
    use std::os::fd::BorrowedFd;
    use std::sync::Arc;

    fn events(d: &Drained) -> Vec<Value> {
        let list: Vec<Value> = serde_json::from_str(&d.json).unwrap();
        assert_eq!(list.len(), d.count);
        list
    }

    fn readable(bus: &EventBus) -> bool {
        let fd = unsafe { BorrowedFd::borrow_raw(bus.fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    #[test]
    fn burst_costs_one_wakeup_and_drain_is_capped() {
        let bus = EventBus::new().unwrap();
        assert!(!readable(&bus));
        for i in 0..1000 {
            bus.push(Event::new(i, "tick", json!(i)));
        }
        assert!(readable(&bus));
        let first = bus.drain(300);
        assert_eq!(events(&first).len(), 300);
        assert!(first.more);
        // Behind the reader: no new byte is needed or written.
        assert!(!readable(&bus));
        let mut seen = 300;
        loop {
            let d = bus.drain(300);
            seen += events(&d).len();
            if !d.more {
                break;
            }
        }
        assert_eq!(seen, 1000);
        bus.push(Event::new(1, "again", Value::Null));
        assert!(readable(&bus), "a push after catching up wakes the reader");
    }

    #[test]
    fn order_is_kept_across_threads() {
        let bus = Arc::new(EventBus::new().unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let bus = bus.clone();
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        bus.push(Event::new(t, "n", json!(i)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut last = [None::<u64>; 4];
        let mut total = 0;
        loop {
            let d = bus.drain(128);
            for e in events(&d) {
                let v = e["data"].as_u64().unwrap();
                let slot = &mut last[e["id"].as_u64().unwrap() as usize];
                assert!(slot.is_none_or(|p| p < v));
                *slot = Some(v);
                total += 1;
            }
            if !d.more {
                break;
            }
        }
        assert_eq!(total, 2000);
    }

    #[test]
    fn closed_bus_drops_events() {
        let bus = EventBus::new().unwrap();
        bus.push(Event::new(1, "a", Value::Null));
        bus.close();
        bus.push(Event::new(2, "b", Value::Null));
        assert_eq!(bus.drain(10).json, "[]");
    }

    #[test]
    fn a_drain_is_one_json_array_of_the_events() {
        let bus = EventBus::new().unwrap();
        bus.push(Event::new(
            7,
            "sync_done",
            json!({ "account": "a\"b", "counts": [1, 2] }),
        ));
        bus.push(Event::new(0, "warning", json!({ "message": "é" })));
        let d = bus.drain(10);
        assert!(!d.more);
        assert_eq!(
            events(&d),
            vec![
                json!({ "id": 7, "name": "sync_done", "data": { "account": "a\"b", "counts": [1, 2] } }),
                json!({ "id": 0, "name": "warning", "data": { "message": "é" } }),
            ]
        );
    }
}
