//! The box's own I/O: the push button and the status LED. The logic here is pure (time is
//! passed in); GPIO (`rppal`, feature `rpi`) and the simulated board drive it.

pub mod button;
