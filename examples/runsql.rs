use std::collections::HashMap;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let text = std::fs::read_to_string(&a[1]).unwrap();
    let cores: usize = a[2].parse().unwrap();
    let vars: HashMap<String, String> = [("DATA".to_string(), a[3].clone()), ("OUT".to_string(), a[4].clone())].into();
    let cfg = weir::config::EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    if a.len() > 5 {
        println!("{}", weir::sql::explain(&text, &vars, cfg).unwrap());
        return;
    }
    let t = std::time::Instant::now();
    match weir::sql::run_script(&text, &vars, cfg) {
        Ok(r) => {
            println!("ok in {:?}", t.elapsed());
            for (n, f) in &r.operators {
                println!("{n}: {f:?}");
            }
        }
        Err(e) => println!("ERR {e}"),
    }
}
