#![no_std]
// This file exists only so that netladder-user can name this crate as a build-dependency;
// the programs are in the `netladder` binary target (src/main.rs).
