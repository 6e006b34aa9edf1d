//! A minimal `log` backend: one line per record on stderr, as text or JSON.

use std::io::Write;

use crate::config::LogFormat;

struct Logger {
    level: log::LevelFilter,
    format: LogFormat,
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let line = match self.format {
            LogFormat::Text => format!("{ts} {:<5} {}\n", r.level(), r.args()),
            LogFormat::Json => format!(
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"target\":\"{}\",\"msg\":\"{}\"}}\n",
                r.level().as_str().to_ascii_lowercase(),
                r.target(),
                json_escape(&r.args().to_string())
            ),
        };
        BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            match b.as_mut() {
                // A worker thread: lines wait for the end of its loop turn.
                Some(buf) => {
                    buf.extend_from_slice(line.as_bytes());
                    if buf.len() > FLUSH_BYTES {
                        write_out(buf);
                    }
                }
                None => write_out(&mut line.into_bytes()),
            }
        });
    }

    fn flush(&self) {}
}

thread_local! {
    /// Log lines of this thread not yet written, when it buffers (see [`buffer_thread`]).
    static BUFFER: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// A buffer this large is written at once.
const FLUSH_BYTES: usize = 64 * 1024;

fn write_out(buf: &mut Vec<u8>) {
    let _ = std::io::stderr().lock().write_all(buf);
    buf.clear();
}

/// Makes this thread buffer its log lines until [`flush_thread`]: a worker writes all
/// lines of one loop turn with one syscall, so a connection storm's lifecycle lines
/// do not cost a `write` each.
pub fn buffer_thread() {
    BUFFER.with(|b| *b.borrow_mut() = Some(Vec::new()));
}

/// Writes this thread's buffered lines.
pub fn flush_thread() {
    BUFFER.with(|b| {
        if let Some(buf) = b.borrow_mut().as_mut() {
            if !buf.is_empty() {
                write_out(buf);
            }
        }
    });
}

/// Escapes `s` for a JSON string, without quotes (through [`crate::json`]).
pub fn json_escape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    crate::json::escape_into(&mut out, s.as_bytes());
    // Escaping only replaces ASCII bytes with ASCII, so UTF-8 stays UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Installs the logger once; later calls are ignored.
pub fn init(level: log::LevelFilter, format: LogFormat) {
    if log::set_boxed_logger(Box::new(Logger { level, format })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_escape_handles_quotes_and_controls() {
        assert_eq!(
            super::json_escape("a\"b\\c\n\u{1}"),
            "a\\\"b\\\\c\\n\\u0001"
        );
    }
}
