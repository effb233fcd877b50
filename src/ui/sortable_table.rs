//! A table whose column headers sort it: click (or Enter on) a header to sort by it, again to
//! reverse. `aria-sort` tells screen readers the order.

use leptos::prelude::*;
use std::cmp::Ordering;

/// What a column sorts by.
#[derive(Clone, Debug, PartialEq)]
pub enum SortValue {
    /// Alphabetical.
    Text(String),
    /// Numerical.
    Number(f64),
}

impl SortValue {
    fn compare(&self, other: &SortValue) -> Ordering {
        match (self, other) {
            (SortValue::Number(a), SortValue::Number(b)) => a.total_cmp(b),
            (SortValue::Text(a), SortValue::Text(b)) => a.cmp(b),
            (SortValue::Number(_), SortValue::Text(_)) => Ordering::Less,
            (SortValue::Text(_), SortValue::Number(_)) => Ordering::Greater,
        }
    }
}

/// One column: its header, what it sorts by and what its cells say.
pub struct Column<T> {
    label: &'static str,
    key: fn(&T) -> SortValue,
    cell: fn(&T) -> String,
}

impl<T> Column<T> {
    /// A column headed `label`, sorted by `key`, showing `cell`.
    pub fn new(label: &'static str, key: fn(&T) -> SortValue, cell: fn(&T) -> String) -> Column<T> {
        Column { label, key, cell }
    }
}

/// `rows` sorted by column `by`, highest first when `descending`; ties keep their order.
pub fn sorted<T: Clone>(rows: &[T], columns: &[Column<T>], by: usize, descending: bool) -> Vec<T> {
    let mut rows = rows.to_vec();
    if let Some(column) = columns.get(by) {
        rows.sort_by(|a, b| {
            let order = (column.key)(a).compare(&(column.key)(b));
            if descending { order.reverse() } else { order }
        });
    }
    rows
}

/// A sortable table of `rows`; `testid` becomes its `data-testid`.
#[component]
pub fn SortableTable<T: Clone + Send + Sync + 'static>(
    /// Read by screen readers.
    caption: &'static str,
    /// The table's `data-testid`.
    testid: &'static str,
    /// Its columns.
    columns: Vec<Column<T>>,
    /// Its rows, in their initial order.
    rows: Vec<T>,
    /// The column it is sorted by and whether descending (`None`: the rows' own order). Pass one
    /// that outlives the table when the page re-renders it with fresh rows, so the order stays.
    #[prop(optional)]
    sort: Option<RwSignal<Option<(usize, bool)>>>,
) -> impl IntoView {
    let sort = sort.unwrap_or_else(|| RwSignal::new(None));
    let columns = StoredValue::new(columns);
    let rows = StoredValue::new(rows);
    let headers = columns.with_value(|columns| {
        columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let label = column.label;
                let state = move || sort.get().filter(|(by, _)| *by == index).map(|(_, descending)| descending);
                view! {
                    <th scope="col" aria-sort=move || match state() { Some(true) => "descending", Some(false) => "ascending", None => "none" }>
                        <button type="button" class="sort" on:click=move |_| sort.set(Some((index, state() == Some(false)))) >
                            {label}
                            <span aria-hidden="true">{move || match state() { Some(true) => " ▼", Some(false) => " ▲", None => "" }}</span>
                        </button>
                    </th>
                }
            })
            .collect_view()
    });
    let body = move || {
        let shown = match sort.get() {
            Some((by, descending)) => {
                columns.with_value(|columns| rows.with_value(|rows| sorted(rows, columns, by, descending)))
            }
            None => rows.get_value(),
        };
        shown
            .iter()
            .map(|row| {
                let cells = columns
                    .with_value(|columns| columns.iter().map(|c| view! { <td>{(c.cell)(row)}</td> }).collect_view());
                view! { <tr>{cells}</tr> }
            })
            .collect_view()
    };
    view! {
        <div class="table-wrap">
            <table class="sortable" data-testid=testid>
                <caption class="sr-only">{caption}</caption>
                <thead><tr>{headers}</tr></thead>
                <tbody>{body}</tbody>
            </table>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sort_by_the_chosen_column_either_way() {
        let columns = vec![
            Column::new("name", |r: &(String, f64)| SortValue::Text(r.0.clone()), |r| r.0.clone()),
            Column::new("cpu", |r: &(String, f64)| SortValue::Number(r.1), |r| r.1.to_string()),
        ];
        let rows = vec![("bob".to_string(), 5.0), ("ann".to_string(), 50.0), ("cy".to_string(), 10.0)];
        let names = |rows: Vec<(String, f64)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(names(sorted(&rows, &columns, 0, false)), ["ann", "bob", "cy"]);
        assert_eq!(names(sorted(&rows, &columns, 1, true)), ["ann", "cy", "bob"], "10 sorts above 5 as a number");
        assert_eq!(names(sorted(&rows, &columns, 9, false)), ["bob", "ann", "cy"], "an unknown column keeps the order");
    }
}
