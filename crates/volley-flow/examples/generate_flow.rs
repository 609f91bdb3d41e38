//! Prints the generated flow used by the `check` benchmark: `cargo run --release -p
//! volley-flow --example generate_flow -- 10000 > big.yaml`, then `volley check big.yaml`.

include!("../benches/gen.rs");

fn main() {
    let steps = std::env::args()
        .nth(1)
        .map_or(10_000, |a| a.parse().expect("a number of steps"));
    print!("{}", generated_flow(steps));
}
