//! The simulated board: its button is pressed through `POST /api/v1/button` and the
//! page, and goes through the same debouncing and press rules as a real one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Board;

#[derive(Debug, Default)]
struct Contact {
    held: bool,
    /// A timed press lets go by itself at this moment.
    until: Option<Instant>,
}

/// The simulated button's contact, shared with the HTTP handlers.
#[derive(Debug, Clone, Default)]
pub struct VirtualButton(Arc<Mutex<Contact>>);

impl VirtualButton {
    fn contact(&self) -> std::sync::MutexGuard<'_, Contact> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds the button for `held`, as a finger would.
    pub fn press(&self, now: Instant, held: Duration) {
        let mut c = self.contact();
        c.held = true;
        c.until = Some(now + held);
    }

    /// Holds or lets go until told otherwise (the page's button follows the mouse).
    pub fn hold(&self, down: bool) {
        let mut c = self.contact();
        c.held = down;
        c.until = None;
    }

    pub fn is_down(&self, now: Instant) -> bool {
        let mut c = self.contact();
        if c.until.is_some_and(|u| now >= u) {
            c.held = false;
            c.until = None;
        }
        c.held
    }
}

#[derive(Debug, Default)]
pub struct SimBoard {
    button: VirtualButton,
    led: bool,
}

impl SimBoard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn led(&self) -> bool {
        self.led
    }
}

impl Board for SimBoard {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn button_down(&mut self) -> std::io::Result<bool> {
        Ok(self.button.is_down(Instant::now()))
    }

    fn set_led(&mut self, on: bool) -> std::io::Result<()> {
        self.led = on;
        Ok(())
    }

    fn virtual_button(&self) -> Option<VirtualButton> {
        Some(self.button.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_press_lets_go_by_itself() {
        let b = VirtualButton::default();
        let t0 = Instant::now();
        assert!(!b.is_down(t0));
        b.press(t0, Duration::from_millis(200));
        assert!(b.is_down(t0 + Duration::from_millis(199)));
        assert!(!b.is_down(t0 + Duration::from_millis(200)));
        b.hold(true);
        assert!(b.is_down(t0 + Duration::from_secs(60)));
        b.hold(false);
        assert!(!b.is_down(t0));
    }
}
