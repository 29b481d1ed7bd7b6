//! One line per step of `up` and `down`, with how long it took, so a learner sees what the
//! lab is made of and where the time goes.

use std::time::Instant;

pub struct Progress {
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress { quiet }
    }

    /// Run one step and print `✓ <what it did>  <ms>`; a failed step prints nothing here:
    /// its error is reported once, by the caller.
    pub fn step<T, E>(&self, run: impl FnOnce() -> Result<(T, String), E>) -> Result<T, E> {
        let started = Instant::now();
        let (value, done) = run()?;
        self.say(&format!(
            "  ✓ {done:<58} {:>6.0} ms",
            started.elapsed().as_secs_f64() * 1000.0
        ));
        Ok(value)
    }

    pub fn say(&self, line: &str) {
        if !self.quiet {
            println!("{line}");
        }
    }
}
