#![no_std]
// The library target exists so that the agent's build script can depend on this crate (cargo
// then rebuilds it when the kernel side changes); the programs live in the binary target.
