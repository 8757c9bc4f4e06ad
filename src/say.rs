//! Printing at the command line's edge that never panics. `println!` panics when its reader
//! has gone (`extdrop status | head` closes the pipe after one line) or stderr is closed, and a
//! panic turns a finished command into exit code 101 — or worse, cuts off `retry` between two
//! files. These macros drop the text instead: the command's work and its exit code stand.

/// `println!` that loses the line, rather than panicking, when stdout's reader has gone.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _lost = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` that loses the text, rather than panicking, when stdout's reader has gone.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _lost = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that loses the line, rather than panicking, when stderr is closed.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _lost = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
