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

/// A port of Go's `text/tabwriter` (no flags), which `ctr` prints every table through: cells are
/// tab-terminated, a line's last cell is not part of a column, and a column's width is decided per
/// block of consecutive lines that have that column. With `padchar` `'\t'` the padding is tabs
/// (`content ls`, `content active`); with `' '` it is spaces (`images ls`, `leases ls`).
#[derive(Clone, Copy, Debug)]
pub struct TabWriter {
    pub minwidth: usize,
    pub tabwidth: usize,
    pub padding: usize,
    pub padchar: char,
}

struct Cell<'a> {
    text: &'a str,
    width: usize,
}

struct Line<'a> {
    cells: Vec<Cell<'a>>,
    newline: bool,
}

impl TabWriter {
    /// `tabwriter.NewWriter(os.Stdout, 1, 8, 1, ' ', 0)`
    pub const SPACES: TabWriter = TabWriter {
        minwidth: 1,
        tabwidth: 8,
        padding: 1,
        padchar: ' ',
    };
    /// `tabwriter.NewWriter(os.Stdout, 1, 8, 1, '\t', 0)`
    pub const TABS: TabWriter = TabWriter {
        minwidth: 1,
        tabwidth: 8,
        padding: 1,
        padchar: '\t',
    };

    /// Formats `text` (lines of `\t`-separated cells) as tabwriter would write it.
    pub fn format(&self, text: &str) -> String {
        let mut out = String::new();
        let mut block: Vec<Line> = Vec::new();
        let raw: Vec<&str> = text.split('\n').collect();
        let n = raw.len();
        for (i, l) in raw.into_iter().enumerate() {
            let cells: Vec<Cell> = l
                .split('\t')
                .map(|t| Cell {
                    text: t,
                    width: t.chars().count(),
                })
                .collect();
            let newline = i + 1 < n;
            let single = cells.len() == 1;
            block.push(Line { cells, newline });
            // A terminated line without tabs ends the block (Go flushes there).
            if newline && single {
                self.flush(&block, &mut out);
                block.clear();
            }
        }
        self.flush(&block, &mut out);
        out
    }

    fn flush(&self, lines: &[Line], out: &mut String) {
        let mut widths = Vec::new();
        self.format_block(lines, 0, lines.len(), &mut widths, out);
    }

    fn format_block(
        &self,
        lines: &[Line],
        mut line0: usize,
        line1: usize,
        widths: &mut Vec<usize>,
        out: &mut String,
    ) {
        let column = widths.len();
        let mut this = line0;
        while this < line1 {
            if column + 1 >= lines[this].cells.len() {
                this += 1;
                continue;
            }
            self.write_lines(lines, line0, this, widths, out);
            line0 = this;
            let mut width = self.minwidth;
            while this < line1 {
                let line = &lines[this];
                if column + 1 >= line.cells.len() {
                    break;
                }
                width = width.max(line.cells[column].width + self.padding);
                this += 1;
            }
            widths.push(width);
            self.format_block(lines, line0, this, widths, out);
            widths.pop();
            line0 = this;
        }
        self.write_lines(lines, line0, line1, widths, out);
    }

    fn write_lines(
        &self,
        lines: &[Line],
        line0: usize,
        line1: usize,
        widths: &[usize],
        out: &mut String,
    ) {
        for line in &lines[line0..line1] {
            for (j, c) in line.cells.iter().enumerate() {
                out.push_str(c.text);
                if j < widths.len() {
                    self.pad(c.width, widths[j], out);
                }
            }
            if line.newline {
                out.push('\n');
            }
        }
    }

    fn pad(&self, textw: usize, cellw: usize, out: &mut String) {
        if self.padchar == '\t' {
            if self.tabwidth == 0 {
                return;
            }
            let cellw = cellw.div_ceil(self.tabwidth) * self.tabwidth;
            let n = cellw.saturating_sub(textw);
            out.extend(std::iter::repeat_n('\t', n.div_ceil(self.tabwidth)));
        } else {
            out.extend(std::iter::repeat_n(
                self.padchar,
                cellw.saturating_sub(textw),
            ));
        }
    }

    /// Formats and writes to stdout; a closed pipe is not an error worth reporting.
    pub fn print(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.format(text).as_bytes());
        let _ = stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::{TabWriter, Table};

    #[test]
    fn pads_every_cell_like_tabwriter() {
        let mut t = Table::new(1, 1);
        t.row(["NAME", "LABELS"]).row(["a", "k=v"]);
        assert_eq!(t.render(), "NAME LABELS \na    k=v    \n");
    }

    #[test]
    fn tabwriter_spaces_pads_terminated_cells_only() {
        let text = "REF\tSTATUS\tUNPACKED\t\nlong-name\tcomplete (2/2)\ttrue\n";
        assert_eq!(
            TabWriter::SPACES.format(text),
            "REF       STATUS         UNPACKED \nlong-name complete (2/2) true\n"
        );
    }

    #[test]
    fn tabwriter_tabs_rounds_to_tab_stops() {
        // ctr content ls: the header's DIGEST cell is padded to the 72-column tab stop.
        let digest = format!("sha256:{}", "a".repeat(64));
        let text = format!("DIGEST\tSIZE\tAGE\tLABELS\n{digest}\t117B\tLess than a second\t-\n");
        let out = TabWriter::TABS.format(&text);
        assert_eq!(
            out,
            format!(
                "DIGEST{}SIZE\tAGE\t\t\tLABELS\n{digest}\t117B\tLess than a second\t-\n",
                "\t".repeat(9)
            )
        );
    }

    #[test]
    fn tabwriter_blocks_end_at_lines_without_the_column() {
        // Column 2 has two blocks (line 0 and line 2), split by line 1, which has no third cell.
        let text = "a\tb\tcccc\t\nlonger\tx\t\nq\tlonger-b\tz\t\n";
        assert_eq!(
            TabWriter::SPACES.format(text),
            "a      b        cccc \nlonger x        \nq      longer-b z \n"
        );
    }
}
