// Deadlines for a loop: a binary min-heap of (deadline, slot, generation).
//
// Why lazy: a busy connection moves its inactivity deadline on every read. Re-keying a
// heap entry each time would cost O(log n) per read; instead a handler just stores its
// new deadline, and when the old entry surfaces the loop re-files it at the handler's
// current deadline. An entry whose slot generation no longer matches belongs to a
// handler that is gone and is dropped. The array only grows, so steady state allocates
// nothing.
struct DeadlineHeap {
    struct Entry {
        var deadline: Int64
        var slot: UInt32
        var generation: UInt32
    }

    private(set) var entries: [Entry] = []

    init() { entries.reserveCapacity(1024) }

    var isEmpty: Bool { entries.isEmpty }
    var earliest: Int64? { entries.first?.deadline }

    mutating func push(_ entry: Entry) {
        entries.append(entry)
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if entries[parent].deadline <= entries[child].deadline { break }
            entries.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard !entries.isEmpty else { return nil }
        let top = entries[0]
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            let count = entries.count
            while true {
                let left = 2 * parent + 1
                if left >= count { break }
                let right = left + 1
                var smallest = left
                if right < count && entries[right].deadline < entries[left].deadline { smallest = right }
                if entries[parent].deadline <= entries[smallest].deadline { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
