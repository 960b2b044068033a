//! Simulators of the Microsoft services.
