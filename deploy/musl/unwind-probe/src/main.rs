//! Panics and catches, on the main thread and another one: exit 0 only when
//! both unwound (see Cargo.toml).
fn main() {
    std::panic::set_hook(Box::new(|_| {}));
    let here = std::panic::catch_unwind(|| -> u32 { panic!("probe") }).is_err();
    let there = std::thread::spawn(|| -> u32 { panic!("probe in a thread") })
        .join()
        .is_err();
    println!("unwinding: main thread {here}, other thread {there}");
    std::process::exit(if here && there { 0 } else { 1 });
}
