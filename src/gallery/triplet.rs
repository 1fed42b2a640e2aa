//! Batch-all triplet loss and a linear projection head trained with it, in a few lines of
//! explicit gradient code (checked against a numerical gradient and a numpy reference in
//! tests/learning.rs).
//!
//! Batch-all: every valid triplet of a batch (anchor `a`, positive `p` of the same person,
//! `a != p`, negative `n` known to be someone else) counts with `d(a,p) - d(a,n) + margin`,
//! clipped at zero, and the loss is the mean over the triplets where it is positive (Hermans et
//! al. 2017; the common TensorFlow formulation divides by their count). `d` is the Euclidean
//! distance or its square. Which pairs are positives and negatives is given per anchor, so
//! sources other than person labels fit in (faces of one track; a rejected photo; two faces in
//! one frame).
//!
//! The head is `y = W x` on the frozen embeddings, `W` initialised to the identity (truncated
//! when fewer outputs are asked for), fitted by full-batch Adam.

/// Positives and negatives of each anchor, by index.
#[derive(Debug, Clone, Default)]
pub struct Relations {
    pub pos: Vec<Vec<usize>>,
    pub neg: Vec<Vec<usize>>,
}

impl Relations {
    /// Same label: positive; different label: negative.
    pub fn from_labels(labels: &[i64]) -> Relations {
        let n = labels.len();
        let mut r = Relations {
            pos: vec![vec![]; n],
            neg: vec![vec![]; n],
        };
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                if labels[a] == labels[b] {
                    r.pos[a].push(b);
                } else {
                    r.neg[a].push(b);
                }
            }
        }
        r
    }

    /// Valid triplets.
    pub fn triplets(&self) -> usize {
        self.pos
            .iter()
            .zip(&self.neg)
            .map(|(p, n)| p.len() * n.len())
            .sum()
    }
}

/// The loss of one batch and its gradient with respect to each embedding.
#[derive(Debug, Clone)]
pub struct Loss {
    pub loss: f64,
    /// Triplets whose clipped loss is above zero (the mean is over these).
    pub positive: usize,
    /// Valid triplets.
    pub valid: usize,
    /// `dloss / dy`, one row per embedding.
    pub grad: Vec<Vec<f64>>,
}

/// Batch-all triplet loss of `y` under `rel`.
pub fn batch_all(y: &[Vec<f64>], rel: &Relations, margin: f64, squared: bool) -> Loss {
    let n = y.len();
    let dim = y.first().map_or(0, Vec::len);
    let mut d = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let s: f64 = y[i].iter().zip(&y[j]).map(|(a, b)| (a - b) * (a - b)).sum();
            let v = if squared { s } else { s.sqrt() };
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    let (mut sum, mut positive, mut valid) = (0.0, 0usize, 0usize);
    // dloss/dd[a][b], before dividing by the number of positive triplets.
    let mut g = vec![0.0f64; n * n];
    for a in 0..n {
        for &p in &rel.pos[a] {
            for &m in &rel.neg[a] {
                valid += 1;
                let l = d[a * n + p] - d[a * n + m] + margin;
                if l > 1e-16 {
                    sum += l;
                    positive += 1;
                    g[a * n + p] += 1.0;
                    g[a * n + m] -= 1.0;
                }
            }
        }
    }
    let mut grad = vec![vec![0.0f64; dim]; n];
    if positive > 0 {
        let scale = 1.0 / positive as f64;
        for a in 0..n {
            for b in 0..n {
                let c = g[a * n + b];
                if c == 0.0 {
                    continue;
                }
                // d(d_ab)/dy_a = 2 (y_a - y_b) squared, (y_a - y_b) / d_ab plain; the opposite
                // for y_b.
                let k = if squared {
                    2.0
                } else if d[a * n + b] > 0.0 {
                    1.0 / d[a * n + b]
                } else {
                    0.0
                };
                let f = c * scale * k;
                for t in 0..dim {
                    let diff = y[a][t] - y[b][t];
                    grad[a][t] += f * diff;
                    grad[b][t] -= f * diff;
                }
            }
        }
    }
    Loss {
        loss: if positive > 0 {
            sum / positive as f64
        } else {
            0.0
        },
        positive,
        valid,
        grad,
    }
}

/// `y = W x` for every `x`.
pub fn project(w: &[Vec<f64>], x: &[Vec<f32>]) -> Vec<Vec<f64>> {
    x.iter()
        .map(|x| {
            w.iter()
                .map(|row| row.iter().zip(x).map(|(a, b)| a * *b as f64).sum())
                .collect()
        })
        .collect()
}

/// The loss of the head `w` on `x`, and its gradient with respect to `w`.
pub fn head_loss(
    w: &[Vec<f64>],
    x: &[Vec<f32>],
    rel: &Relations,
    margin: f64,
    squared: bool,
) -> (Loss, Vec<Vec<f64>>) {
    let y = project(w, x);
    let l = batch_all(&y, rel, margin, squared);
    let mut gw = vec![vec![0.0f64; x.first().map_or(0, Vec::len)]; w.len()];
    for (gy, x) in l.grad.iter().zip(x) {
        for (row, &g) in gw.iter_mut().zip(gy) {
            if g != 0.0 {
                for (r, &v) in row.iter_mut().zip(x) {
                    *r += g * v as f64;
                }
            }
        }
    }
    (l, gw)
}

/// How a head is fitted.
#[derive(Debug, Clone)]
pub struct Fit {
    pub out_dim: usize,
    pub margin: f64,
    pub squared: bool,
    pub steps: usize,
    pub learning_rate: f64,
}

/// A fitted head and the loss before and after.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub w: Vec<Vec<f64>>,
    pub before: Loss,
    pub after: Loss,
}

/// Fits `W` on `x` by full-batch Adam from the (truncated) identity; keeps the best step.
pub fn fit(x: &[Vec<f32>], rel: &Relations, f: &Fit) -> Fitted {
    let dim = x.first().map_or(0, Vec::len);
    let mut w: Vec<Vec<f64>> = (0..f.out_dim.min(dim).max(1))
        .map(|r| (0..dim).map(|c| if r == c { 1.0 } else { 0.0 }).collect())
        .collect();
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let mut m = vec![vec![0.0; dim]; w.len()];
    let mut v = vec![vec![0.0; dim]; w.len()];
    let (before, _) = head_loss(&w, x, rel, f.margin, f.squared);
    let mut best = (before.loss, w.clone());
    for step in 1..=f.steps {
        let (l, gw) = head_loss(&w, x, rel, f.margin, f.squared);
        if l.loss < best.0 {
            best = (l.loss, w.clone());
        }
        if l.positive == 0 {
            break;
        }
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for r in 0..w.len() {
            for c in 0..dim {
                let g = gw[r][c];
                m[r][c] = b1 * m[r][c] + (1.0 - b1) * g;
                v[r][c] = b2 * v[r][c] + (1.0 - b2) * g * g;
                w[r][c] -= f.learning_rate * (m[r][c] / c1) / ((v[r][c] / c2).sqrt() + eps);
            }
        }
    }
    let (last, _) = head_loss(&w, x, rel, f.margin, f.squared);
    if last.loss < best.0 {
        best = (last.loss, w);
    }
    let (after, _) = head_loss(&best.1, x, rel, f.margin, f.squared);
    Fitted {
        w: best.1,
        before,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> (Vec<Vec<f32>>, Vec<i64>) {
        let x = vec![
            vec![0.1, 0.4, -0.2],
            vec![0.3, 0.1, 0.0],
            vec![-0.5, 0.2, 0.3],
            vec![0.0, -0.3, 0.6],
            vec![0.2, 0.2, 0.2],
        ];
        (x, vec![0, 0, 1, 1, 2])
    }

    #[test]
    fn the_gradient_matches_a_numerical_one_for_both_distances() {
        let (x, labels) = batch();
        let rel = Relations::from_labels(&labels);
        for squared in [false, true] {
            let w: Vec<Vec<f64>> = vec![
                vec![1.0, 0.2, -0.1],
                vec![0.3, 0.9, 0.0],
                vec![-0.2, 0.1, 1.1],
            ];
            let (l, gw) = head_loss(&w, &x, &rel, 0.5, squared);
            assert!(l.positive > 0);
            let h = 1e-6;
            for r in 0..3 {
                for c in 0..3 {
                    let mut up = w.clone();
                    up[r][c] += h;
                    let mut down = w.clone();
                    down[r][c] -= h;
                    let num = (head_loss(&up, &x, &rel, 0.5, squared).0.loss
                        - head_loss(&down, &x, &rel, 0.5, squared).0.loss)
                        / (2.0 * h);
                    assert!(
                        (num - gw[r][c]).abs() < 1e-5,
                        "squared {squared} W[{r}][{c}]: numerical {num}, analytic {}",
                        gw[r][c]
                    );
                }
            }
        }
    }

    #[test]
    fn fitting_lowers_the_loss() {
        let (x, labels) = batch();
        let rel = Relations::from_labels(&labels);
        let f = fit(
            &x,
            &rel,
            &Fit {
                out_dim: 3,
                margin: 0.5,
                squared: false,
                steps: 200,
                learning_rate: 0.01,
            },
        );
        assert!(
            f.after.loss < f.before.loss,
            "{} -> {}",
            f.before.loss,
            f.after.loss
        );
    }
}
