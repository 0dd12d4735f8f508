//! ringload: SMTP load generator, sink, capacity sweep and HTML report.
fn main() {
    println!("ringload");
}
