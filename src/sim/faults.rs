//! Fault plans: the per-call dice roll that decides which injected failures a call meets, and
//! the error texts they answer with.

use rand::Rng;
use rand::rngs::StdRng;

use super::scenario::Faults;

/// What the dice decided for one call. Every die is rolled on every call, in a fixed order,
/// so that the sequence of decisions depends only on the seed and the number of calls.
#[expect(
    clippy::struct_excessive_bools,
    reason = "Nine independent dice: a bool each is the honest shape."
)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dice {
    pub drop: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub slow: bool,
    pub throttle: bool,
    pub unavailable: bool,
    pub lost_response: bool,
    pub retcode_as_string: bool,
    pub null_lists: bool,
}

impl Dice {
    pub(crate) fn roll(faults: &Faults, rng: &mut StdRng) -> Dice {
        // `random::<f64>() < p` always consumes one draw (unlike `random_bool`), keeping the
        // stream aligned whatever the rates are.
        let mut die = |p: f64| rng.random::<f64>() < p;
        Dice {
            drop: die(faults.drop),
            http_502: die(faults.http_502),
            http_503: die(faults.http_503),
            slow: die(faults.slow),
            throttle: die(faults.throttle),
            unavailable: die(faults.unavailable),
            lost_response: die(faults.lost_response),
            retcode_as_string: die(faults.retcode_as_string),
            null_lists: die(faults.null_lists),
        }
    }
}

/// What nginx in front of the gateway answers on a dead upstream.
pub(crate) const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// What nginx answers while the upstream is overloaded or in maintenance.
pub(crate) const HTML_503: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n\
<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n\
</body>\r\n</html>\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zero_rates_never_fire_and_one_always_does() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(Dice::roll(&Faults::default(), &mut rng), Dice::default());
        }
        let all = Faults {
            drop: 1.0,
            null_lists: 1.0,
            ..Faults::default()
        };
        let p = Dice::roll(&all, &mut rng);
        assert!(p.drop && p.null_lists && !p.http_502);
    }

    #[test]
    fn same_seed_same_plans() {
        let f = Faults {
            drop: 0.3,
            slow: 0.3,
            ..Faults::default()
        };
        let mut a = StdRng::seed_from_u64(9);
        let mut b = StdRng::seed_from_u64(9);
        let pa: Vec<Dice> = (0..50).map(|_| Dice::roll(&f, &mut a)).collect();
        let pb: Vec<Dice> = (0..50).map(|_| Dice::roll(&f, &mut b)).collect();
        assert_eq!(pa, pb);
        assert!(pa.iter().any(|p| p.drop) && pa.iter().any(|p| !p.drop));
    }
}
