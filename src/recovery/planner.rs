//! Recovery planner (being written).
