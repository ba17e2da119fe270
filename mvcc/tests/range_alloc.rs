//! A Range with `limit`, `keys_only` or `count_only` over a large key space allocates for what it
//! returns, not for the range (issue 16): a counting allocator measures the call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use etcd_client::proto::{PbPutRequest, PbRangeRequest};
use metastore_mvcc::Store;

/// Counts the bytes this thread allocates.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// thread-local `Cell` with a const initializer, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

#[test]
fn a_paged_range_allocates_for_its_page_only() {
    let mut s = Store::new();
    let keys = 20_000usize;
    for i in 0..keys {
        s.put(&PbPutRequest {
            key: format!("k{i:06}").into_bytes(),
            value: vec![b'v'; 1024],
            ..Default::default()
        })
        .unwrap();
    }
    let all = PbRangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        ..Default::default()
    };
    // The whole range copies every value: about 20 MiB.
    let (r, whole) = allocated_by(|| s.range(&all).unwrap());
    assert_eq!(r.kvs.len(), keys);
    assert!(whole > keys * 1024, "{whole}");
    // A page of 10: its 10 values and little else, whatever the range's size.
    let (r, page) = allocated_by(|| {
        s.range(&PbRangeRequest {
            limit: 10,
            ..all.clone()
        })
        .unwrap()
    });
    assert_eq!((r.kvs.len(), r.count, r.more), (10, keys as i64, true));
    assert!(page < 64 * 1024, "a page of 10 allocated {page} bytes");
    // Counting and keys only copy no values.
    let (r, count) = allocated_by(|| {
        s.range(&PbRangeRequest {
            count_only: true,
            ..all.clone()
        })
        .unwrap()
    });
    assert_eq!((r.kvs.len(), r.count), (0, keys as i64));
    assert!(count < 4 * 1024, "count_only allocated {count} bytes");
    let (r, keys_only) = allocated_by(|| {
        s.range(&PbRangeRequest {
            keys_only: true,
            ..all.clone()
        })
        .unwrap()
    });
    assert_eq!(r.kvs.len(), keys);
    assert!(
        keys_only < whole / 4,
        "keys_only allocated {keys_only} of {whole} bytes"
    );
}
