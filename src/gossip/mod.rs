//! What peers tell each other, and the one boundary where wire types (`proto`)
//! become storage types (`index`) and back.

pub mod announced;
pub mod delta;
pub mod index;
pub mod trust;
pub mod wire;
