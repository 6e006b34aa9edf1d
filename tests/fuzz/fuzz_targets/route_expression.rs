//! Route selection: the input up to the first NUL is an expression (lossily UTF-8); when
//! it parses, it is evaluated on the rest of the input as a message. Neither may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::route::{Expression, Selector};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == 0);
    let src = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let message = parts.next().unwrap_or_default();
    if let Ok(expr) = Expression::parse(&src) {
        let _ = Selector::new().evaluate(&expr, message);
    }
});
