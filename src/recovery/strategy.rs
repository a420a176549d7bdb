//! Strategies (being written).
