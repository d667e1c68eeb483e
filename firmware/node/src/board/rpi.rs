//! The button and LED on a Raspberry Pi's GPIO header, through `rppal` (which maps the
//! GPIO registers; a read is a memory load, so polling every 10 ms costs nothing).

use anyhow::Context;
use rppal::gpio::{Gpio, InputPin, OutputPin};

use super::{Board, Pins};

#[derive(Debug)]
pub struct GpioBoard {
    button: InputPin,
    led: OutputPin,
}

impl GpioBoard {
    pub fn open(pins: Pins) -> anyhow::Result<Self> {
        let gpio = Gpio::new().context("cannot open the GPIO (is this a Raspberry Pi?)")?;
        let button = gpio
            .get(pins.button)
            .with_context(|| format!("button pin GPIO{}", pins.button))?
            .into_input_pullup();
        let led = gpio
            .get(pins.led)
            .with_context(|| format!("LED pin GPIO{}", pins.led))?
            .into_output_low();
        Ok(Self { button, led })
    }
}

impl Board for GpioBoard {
    fn kind(&self) -> &'static str {
        "gpio"
    }

    fn button_down(&mut self) -> std::io::Result<bool> {
        // Wired to ground with the pull-up: low while pressed.
        Ok(self.button.is_low())
    }

    fn set_led(&mut self, on: bool) -> std::io::Result<()> {
        if on {
            self.led.set_high();
        } else {
            self.led.set_low();
        }
        Ok(())
    }
}
