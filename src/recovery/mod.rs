//! Auto-recovery (being written).

pub mod planner;
pub mod strategy;
