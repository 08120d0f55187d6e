//! Column-aligned output in the layout of Go's tabwriter as `ctr` uses it: every cell is padded
//! to its column's widest cell plus `padding`, so scripts that parse `ctr` output parse ours.

use std::io::Write;

pub struct Table {
    min_width: usize,
    padding: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(min_width: usize, padding: usize) -> Self {
        Table {
            min_width,
            padding,
            rows: Vec::new(),
        }
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
        self
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = (widths[i] + self.padding).max(self.min_width);
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`bctr … | head`) is not an error worth reporting.
        let _ = stdout.write_all(self.render().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn pads_every_cell_like_tabwriter() {
        let mut t = Table::new(1, 1);
        t.row(["NAME", "LABELS"]).row(["a", "k=v"]);
        assert_eq!(t.render(), "NAME LABELS \na    k=v    \n");
    }
}
