//! (in progress: helper H2)
