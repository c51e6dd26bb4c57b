//! Incremental aggregate functions (Flink's `AggregateFunction`): count, sum, min, max, avg,
//! count distinct, tuples of aggregates, and user-defined ones from closures.
//!
//! Invariants: `add` and `merge` are associative and commutative, so session merging and
//! shard counts never change a result; `result` never panics (an empty accumulator gives the
//! type's default, which windows never ask for since every window holds at least one record).

use std::hash::Hash;

use rustc_hash::FxHashSet;

/// An incremental aggregation of records of type `T`.
pub trait AggregateFunction<T>: Clone + Send + Sync + 'static {
    type Acc: Clone + 'static;
    type Out: Send + 'static;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, value: &T);
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);
    fn result(&self, acc: &Self::Acc) -> Self::Out;
}

/// Numbers the built-in aggregates work on.
pub trait Numeric: Copy + PartialOrd + Default + Send + Sync + 'static {
    fn add(self, other: Self) -> Self;
    fn to_f64(self) -> f64;
    fn to_i128(self) -> i128;
}

macro_rules! numeric {
    ($($t:ty => $add:ident),*) => {$(
        impl Numeric for $t {
            #[inline] fn add(self, o: Self) -> Self { self.$add(o) }
            #[inline] fn to_f64(self) -> f64 { self as f64 }
            #[inline] fn to_i128(self) -> i128 { self as i128 }
        }
    )*};
}
numeric!(i8 => wrapping_add, i16 => wrapping_add, i32 => wrapping_add, i64 => wrapping_add, u8 => wrapping_add, u16 => wrapping_add, u32 => wrapping_add, u64 => wrapping_add);
impl Numeric for f64 {
    #[inline]
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
}
impl Numeric for f32 {
    #[inline]
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
}

/// `COUNT(*)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count;

impl<T> AggregateFunction<T> for Count {
    type Acc = i64;
    type Out = i64;
    fn create(&self) -> i64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut i64, _: &T) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut i64, other: &i64) {
        *acc += other;
    }
    fn result(&self, acc: &i64) -> i64 {
        *acc
    }
}

macro_rules! field_agg {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name<F>(pub F);
    };
}
field_agg!(
    /// `SUM(f)`: integer sums wrap on overflow like Java's `long`.
    Sum
);
field_agg!(
    /// `MIN(f)`.
    Min
);
field_agg!(
    /// `MAX(f)`.
    Max
);
field_agg!(
    /// `AVG(f)` as a double.
    Avg
);
field_agg!(
    /// `AVG(f)` of integers as an integer, truncated toward zero (Flink SQL's `AVG(BIGINT)`).
    AvgInt
);
field_agg!(
    /// `COUNT(DISTINCT f)`. The accumulator holds every distinct value of the window.
    CountDistinct
);

impl<T, V: Numeric, F: Fn(&T) -> V + Clone + Send + Sync + 'static> AggregateFunction<T> for Sum<F> {
    type Acc = V;
    type Out = V;
    fn create(&self) -> V {
        V::default()
    }
    #[inline]
    fn add(&self, acc: &mut V, v: &T) {
        *acc = acc.add((self.0)(v));
    }
    fn merge(&self, acc: &mut V, other: &V) {
        *acc = acc.add(*other);
    }
    fn result(&self, acc: &V) -> V {
        *acc
    }
}

impl<T, V: Numeric, F: Fn(&T) -> V + Clone + Send + Sync + 'static> AggregateFunction<T> for Min<F> {
    type Acc = Option<V>;
    type Out = V;
    fn create(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, v: &T) {
        let x = (self.0)(v);
        if acc.is_none_or(|a| x < a) {
            *acc = Some(x);
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: &Option<V>) {
        if let Some(o) = other {
            if acc.is_none_or(|a| *o < a) {
                *acc = Some(*o);
            }
        }
    }
    fn result(&self, acc: &Option<V>) -> V {
        acc.unwrap_or_default()
    }
}

impl<T, V: Numeric, F: Fn(&T) -> V + Clone + Send + Sync + 'static> AggregateFunction<T> for Max<F> {
    type Acc = Option<V>;
    type Out = V;
    fn create(&self) -> Option<V> {
        None
    }
    #[inline]
    fn add(&self, acc: &mut Option<V>, v: &T) {
        let x = (self.0)(v);
        if acc.is_none_or(|a| x > a) {
            *acc = Some(x);
        }
    }
    fn merge(&self, acc: &mut Option<V>, other: &Option<V>) {
        if let Some(o) = other {
            if acc.is_none_or(|a| *o > a) {
                *acc = Some(*o);
            }
        }
    }
    fn result(&self, acc: &Option<V>) -> V {
        acc.unwrap_or_default()
    }
}

impl<T, V: Numeric, F: Fn(&T) -> V + Clone + Send + Sync + 'static> AggregateFunction<T> for Avg<F> {
    type Acc = (f64, i64);
    type Out = f64;
    fn create(&self) -> (f64, i64) {
        (0.0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (f64, i64), v: &T) {
        acc.0 += (self.0)(v).to_f64();
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (f64, i64), other: &(f64, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(f64, i64)) -> f64 {
        if acc.1 == 0 {
            0.0
        } else {
            acc.0 / acc.1 as f64
        }
    }
}

impl<T, V: Numeric, F: Fn(&T) -> V + Clone + Send + Sync + 'static> AggregateFunction<T> for AvgInt<F> {
    type Acc = (i128, i64);
    type Out = i64;
    fn create(&self) -> (i128, i64) {
        (0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (i128, i64), v: &T) {
        acc.0 += (self.0)(v).to_i128();
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (i128, i64), other: &(i128, i64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn result(&self, acc: &(i128, i64)) -> i64 {
        if acc.1 == 0 {
            0
        } else {
            (acc.0 / acc.1 as i128) as i64
        }
    }
}

impl<T, V, F> AggregateFunction<T> for CountDistinct<F>
where
    V: Hash + Eq + Clone + Send + Sync + 'static,
    F: Fn(&T) -> V + Clone + Send + Sync + 'static,
{
    type Acc = FxHashSet<V>;
    type Out = i64;
    fn create(&self) -> FxHashSet<V> {
        FxHashSet::default()
    }
    fn add(&self, acc: &mut FxHashSet<V>, v: &T) {
        acc.insert((self.0)(v));
    }
    fn merge(&self, acc: &mut FxHashSet<V>, other: &FxHashSet<V>) {
        acc.extend(other.iter().cloned());
    }
    fn result(&self, acc: &FxHashSet<V>) -> i64 {
        acc.len() as i64
    }
}

macro_rules! tuple_agg {
    ($($a:ident . $i:tt),+) => {
        impl<T, $($a: AggregateFunction<T>),+> AggregateFunction<T> for ($($a,)+) {
            type Acc = ($($a::Acc,)+);
            type Out = ($($a::Out,)+);
            fn create(&self) -> Self::Acc { ($(self.$i.create(),)+) }
            #[inline]
            fn add(&self, acc: &mut Self::Acc, v: &T) { $(self.$i.add(&mut acc.$i, v);)+ }
            fn merge(&self, acc: &mut Self::Acc, o: &Self::Acc) { $(self.$i.merge(&mut acc.$i, &o.$i);)+ }
            fn result(&self, acc: &Self::Acc) -> Self::Out { ($(self.$i.result(&acc.$i),)+) }
        }
    };
}
tuple_agg!(A.0, B.1);
tuple_agg!(A.0, B.1, C.2);
tuple_agg!(A.0, B.1, C.2, D.3);
tuple_agg!(A.0, B.1, C.2, D.3, E.4);
tuple_agg!(A.0, B.1, C.2, D.3, E.4, G.5);

/// A user-defined aggregate from four closures.
#[derive(Clone)]
pub struct AggregateFn<C, A, M, R> {
    pub create: C,
    pub add: A,
    pub merge: M,
    pub result: R,
}

impl<T, Acc, Out, C, A, M, R> AggregateFunction<T> for AggregateFn<C, A, M, R>
where
    Acc: Clone + 'static,
    Out: Send + 'static,
    C: Fn() -> Acc + Clone + Send + Sync + 'static,
    A: Fn(&mut Acc, &T) + Clone + Send + Sync + 'static,
    M: Fn(&mut Acc, &Acc) + Clone + Send + Sync + 'static,
    R: Fn(&Acc) -> Out + Clone + Send + Sync + 'static,
{
    type Acc = Acc;
    type Out = Out;
    fn create(&self) -> Acc {
        (self.create)()
    }
    fn add(&self, acc: &mut Acc, v: &T) {
        (self.add)(acc, v)
    }
    fn merge(&self, acc: &mut Acc, o: &Acc) {
        (self.merge)(acc, o)
    }
    fn result(&self, acc: &Acc) -> Out {
        (self.result)(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_and_tuples() {
        let agg = (
            Count,
            Sum(|x: &i64| *x),
            Min(|x: &i64| *x),
            Max(|x: &i64| *x),
            AvgInt(|x: &i64| *x),
            CountDistinct(|x: &i64| *x % 2),
        );
        let mut a = agg.create();
        for v in [5i64, -3, 7, 7] {
            agg.add(&mut a, &v);
        }
        let mut b = agg.create();
        agg.add(&mut b, &-10);
        agg.merge(&mut a, &b);
        assert_eq!(agg.result(&a), (5, 6, -10, 7, 1, 3));
        // AVG(BIGINT) truncates toward zero like Flink.
        let avg = AvgInt(|x: &i64| *x);
        let mut acc = avg.create();
        avg.add(&mut acc, &-3);
        avg.add(&mut acc, &-4);
        assert_eq!(avg.result(&acc), -3);
    }
}
