//! DNS answers (`kind::DNS_ANSWER`) and resolver calls (`kind::RESOLVER`): #024.
use super::{Failure, Observation};

#[derive(Default)]
pub struct State {}

impl State {
    pub fn feed(&mut self, _obs: &Observation, _now: u64) -> Vec<Failure> {
        Vec::new()
    }

    pub fn tick(&mut self, _now: u64) -> Vec<Failure> {
        Vec::new()
    }
}
