using System.Collections;

namespace Iommu.Internal;

/// <summary>
/// Non-overlapping ranges <c>[Lo, Hi]</c> of 64-bit keys in a red-black tree keyed by <c>Lo</c>, with a
/// value each: the shape of the kernel's IOVA tree (<c>struct iova</c> in <c>iovad->rbroot</c>) and of
/// type1's mapping tree (<c>struct vfio_dma</c> in <c>iommu->dma_list</c>). The nodes live in one
/// growable array and are named by index, so adding and removing allocate nothing once the array has
/// grown (the kernel's slab caches).
/// </summary>
/// <typeparam name="TValue">What each range carries.</typeparam>
/// <remarks>
/// The classic algorithm with a black sentinel at index <see cref="Nil"/> (whose parent the removal
/// borrows, as in the textbook). A removal moves nodes, never keys: every other node keeps its index,
/// so indices held elsewhere (an IOVA domain's cached nodes, a mapping's own node) stay valid, and a
/// walk may remove the node it stands on once it has taken the next. Callers keep ranges disjoint, so
/// <c>Lo</c> keys are distinct. Not thread-safe: the owner's lock guards it.
/// </remarks>
internal sealed class RangeTree<TValue> : IEnumerable<TValue>
{
    /// <summary>The sentinel: no node.</summary>
    public const int Nil = 0;

    private Node[] _nodes = new Node[16];
    private int _root = Nil;
    private int _free = Nil; // free slots, linked through Right
    private int _used = 1;   // slots ever handed out; slot 0 is the sentinel

    /// <summary>Ranges in the tree.</summary>
    public int Count { get; private set; }

    /// <summary>The node at <paramref name="i"/>; the reference is valid until the next <see cref="Insert"/>.</summary>
    public ref Node this[int i] => ref _nodes[i];

    /// <summary>Adds <c>[lo, hi]</c> carrying <paramref name="value"/> (no range may start at <paramref name="lo"/> already) and returns its node.</summary>
    public int Insert(ulong lo, ulong hi, TValue value)
    {
        int z = NewSlot();
        Node[] n = _nodes;
        int parent = Nil;
        for (int x = _root; x != Nil; x = lo < n[x].Lo ? n[x].Left : n[x].Right)
        {
            parent = x;
        }

        n[z] = new Node { Lo = lo, Hi = hi, Value = value, Parent = parent, Left = Nil, Right = Nil, Red = true };
        if (parent == Nil)
        {
            _root = z;
        }
        else if (lo < n[parent].Lo)
        {
            n[parent].Left = z;
        }
        else
        {
            n[parent].Right = z;
        }

        InsertFixup(z);
        Count++;
        return z;
    }

    /// <summary>Removes node <paramref name="z"/> (<c>rb_erase</c>); its slot is reused by a later insert.</summary>
    public void Remove(int z)
    {
        Node[] n = _nodes;
        int y = z;
        bool yWasRed = n[y].Red;
        int x;
        if (n[z].Left == Nil)
        {
            x = n[z].Right;
            Transplant(z, x);
        }
        else if (n[z].Right == Nil)
        {
            x = n[z].Left;
            Transplant(z, x);
        }
        else
        {
            y = Extreme(n[z].Right, left: true);
            yWasRed = n[y].Red;
            x = n[y].Right;
            if (n[y].Parent == z)
            {
                n[x].Parent = y; // x may be the sentinel: the fix-up starts from its parent
            }
            else
            {
                Transplant(y, n[y].Right);
                n[y].Right = n[z].Right;
                n[n[y].Right].Parent = y;
            }

            Transplant(z, y);
            n[y].Left = n[z].Left;
            n[n[y].Left].Parent = y;
            n[y].Red = n[z].Red;
        }

        if (!yWasRed)
        {
            DeleteFixup(x);
        }

        n[Nil] = default;
        n[z] = default;
        n[z].Right = _free;
        _free = z;
        Count--;
    }

    /// <summary>The node with the lowest <c>Lo</c>, or <see cref="Nil"/>.</summary>
    public int First() => _root == Nil ? Nil : Extreme(_root, left: true);

    /// <summary>The node with the highest <c>Lo</c>, or <see cref="Nil"/>.</summary>
    public int Last() => _root == Nil ? Nil : Extreme(_root, left: false);

    /// <summary>The node with the highest <c>Lo</c> at or below <paramref name="key"/>, or <see cref="Nil"/>.</summary>
    public int Floor(ulong key)
    {
        Node[] n = _nodes;
        int best = Nil;
        for (int x = _root; x != Nil;)
        {
            if (n[x].Lo <= key)
            {
                best = x;
                x = n[x].Right;
            }
            else
            {
                x = n[x].Left;
            }
        }

        return best;
    }

    /// <summary>The first node whose range ends at or above <paramref name="key"/> (<c>Hi</c> ≥ key), or <see cref="Nil"/>.</summary>
    public int FirstEndingAtOrAfter(ulong key)
    {
        int x = Floor(key);
        if (x == Nil)
        {
            return First();
        }

        return _nodes[x].Hi >= key ? x : Next(x);
    }

    /// <summary>The values in <c>Lo</c> order (allocation-free with <c>foreach</c>; do not change the tree meanwhile).</summary>
    public Enumerator GetEnumerator() => new(this);

    IEnumerator<TValue> IEnumerable<TValue>.GetEnumerator() => GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>The next node in <c>Lo</c> order (<c>rb_next</c>), or <see cref="Nil"/>.</summary>
    public int Next(int x) => Neighbour(x, forward: true);

    /// <summary>The previous node in <c>Lo</c> order (<c>rb_prev</c>), or <see cref="Nil"/>.</summary>
    public int Prev(int x) => Neighbour(x, forward: false);

    /// <summary>
    /// Checks the red-black and order invariants and the count; returns null when they hold, else what
    /// is broken (for tests).
    /// </summary>
    internal string? Validate()
    {
        Node[] n = _nodes;
        if (n[Nil].Red)
        {
            return "the sentinel is red";
        }

        if (_root != Nil && (n[_root].Red || n[_root].Parent != Nil))
        {
            return "the root is red or has a parent";
        }

        int count = 0;
        string? problem = null;
        BlackHeight(_root, ulong.MinValue, ulong.MaxValue, ref count, ref problem);
        return problem ?? (count != Count ? $"{count} nodes reachable, Count says {Count}" : null);
    }

    private int BlackHeight(int x, ulong min, ulong max, ref int count, ref string? problem)
    {
        if (x == Nil || problem is not null)
        {
            return 1;
        }

        Node[] n = _nodes;
        count++;
        if (n[x].Lo < min || n[x].Lo > max || n[x].Hi < n[x].Lo)
        {
            problem = $"node [0x{n[x].Lo:x}, 0x{n[x].Hi:x}] is out of order";
        }

        foreach (int c in (ReadOnlySpan<int>)[n[x].Left, n[x].Right])
        {
            if (c != Nil && n[c].Parent != x)
            {
                problem ??= $"the child of [0x{n[x].Lo:x}] does not point back to it";
            }

            if (n[x].Red && n[c].Red)
            {
                problem ??= $"red node [0x{n[x].Lo:x}] has a red child";
            }
        }

        int left = BlackHeight(n[x].Left, min, n[x].Lo == 0 ? 0 : n[x].Lo - 1, ref count, ref problem);
        int right = BlackHeight(n[x].Right, n[x].Lo + 1, max, ref count, ref problem);
        if (left != right)
        {
            problem ??= $"black heights differ under [0x{n[x].Lo:x}]";
        }

        return left + (n[x].Red ? 0 : 1);
    }

    private int NewSlot()
    {
        if (_free != Nil)
        {
            int slot = _free;
            _free = _nodes[slot].Right;
            return slot;
        }

        if (_used == _nodes.Length)
        {
            Array.Resize(ref _nodes, _nodes.Length * 2);
        }

        return _used++;
    }

    // The child of x on one side (the textbook's x.left or x.right).
    private ref int Child(int x, bool left) => ref left ? ref _nodes[x].Left : ref _nodes[x].Right;

    // The leftmost (or rightmost) node of the subtree at x.
    private int Extreme(int x, bool left)
    {
        for (int c = Child(x, left); c != Nil; c = Child(x, left))
        {
            x = c;
        }

        return x;
    }

    // The in-order neighbour of x: the extreme of the subtree on that side, else the first ancestor
    // reached from the other side.
    private int Neighbour(int x, bool forward)
    {
        int c = Child(x, left: !forward);
        if (c != Nil)
        {
            return Extreme(c, left: forward);
        }

        int p = _nodes[x].Parent;
        while (p != Nil && x == Child(p, left: !forward))
        {
            x = p;
            p = _nodes[p].Parent;
        }

        return p;
    }

    // v (perhaps the sentinel, whose parent the removal's fix-up then reads) takes u's place under u's parent.
    private void Transplant(int u, int v)
    {
        Node[] n = _nodes;
        int p = n[u].Parent;
        if (p == Nil)
        {
            _root = v;
        }
        else if (u == n[p].Left)
        {
            n[p].Left = v;
        }
        else
        {
            n[p].Right = v;
        }

        n[v].Parent = p;
    }

    // A rotation towards `left` (the textbook's LEFT-ROTATE when true): x's child on the other side
    // takes x's place, and x becomes that child's child on this side.
    private void Rotate(int x, bool left)
    {
        int y = Child(x, !left);
        int inner = Child(y, left);
        Child(x, !left) = inner;
        if (inner != Nil)
        {
            _nodes[inner].Parent = x;
        }

        Transplant(x, y);
        Child(y, left) = x;
        _nodes[x].Parent = y;
    }

    private void InsertFixup(int z)
    {
        Node[] n = _nodes;
        while (n[n[z].Parent].Red)
        {
            int p = n[z].Parent;
            int g = n[p].Parent; // a red node is never the root, so p has a parent
            bool left = p == n[g].Left;
            int uncle = Child(g, !left);
            if (n[uncle].Red)
            {
                n[p].Red = false;
                n[uncle].Red = false;
                n[g].Red = true;
                z = g;
                continue;
            }

            if (z == Child(p, !left))
            {
                z = p;
                Rotate(z, left);
                p = n[z].Parent;
            }

            n[p].Red = false;
            n[g].Red = true;
            Rotate(g, !left);
        }

        n[_root].Red = false;
    }

    private void DeleteFixup(int x)
    {
        Node[] n = _nodes;
        while (x != _root && !n[x].Red)
        {
            int p = n[x].Parent;
            bool left = x == n[p].Left;
            int w = Child(p, !left); // never the sentinel: x is doubly black
            if (n[w].Red)
            {
                n[w].Red = false;
                n[p].Red = true;
                Rotate(p, left);
                w = Child(p, !left);
            }

            int near = Child(w, left), far = Child(w, !left);
            if (!n[near].Red && !n[far].Red)
            {
                n[w].Red = true;
                x = p;
                continue;
            }

            if (!n[far].Red)
            {
                n[near].Red = false;
                n[w].Red = true;
                Rotate(w, !left);
                w = Child(p, !left);
                far = Child(w, !left);
            }

            n[w].Red = n[p].Red;
            n[p].Red = false;
            n[far].Red = false;
            Rotate(p, left);
            x = _root;
        }

        n[x].Red = false;
    }

    /// <summary>A range, its value and its tree links.</summary>
    internal struct Node
    {
#pragma warning disable CA1051 // a plain record read and written in place by the owner
        /// <summary>First key (<c>pfn_lo</c>, a mapping's IOVA).</summary>
        public ulong Lo;

        /// <summary>Last key (<c>pfn_hi</c>, a mapping's last byte).</summary>
        public ulong Hi;

        /// <summary>What the range carries.</summary>
        public TValue Value;

        /// <summary>Parent, children (indices).</summary>
        public int Parent, Left, Right;

        /// <summary>Colour.</summary>
        public bool Red;
#pragma warning restore CA1051
    }

    /// <summary>Walks the values in <c>Lo</c> order.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1815", Justification = "An enumerator: never compared.")]
    public struct Enumerator : IEnumerator<TValue>
    {
        private readonly RangeTree<TValue> _tree;
        private int _node;
        private bool _started;

        internal Enumerator(RangeTree<TValue> tree)
        {
            _tree = tree;
            _node = Nil;
            _started = false;
        }

        /// <inheritdoc/>
        public readonly TValue Current => _tree._nodes[_node].Value;

        readonly object? IEnumerator.Current => Current;

        /// <inheritdoc/>
        public bool MoveNext()
        {
            _node = _started ? (_node == Nil ? Nil : _tree.Next(_node)) : _tree.First();
            _started = true;
            return _node != Nil;
        }

        /// <inheritdoc/>
        public void Reset()
        {
            _node = Nil;
            _started = false;
        }

        /// <inheritdoc/>
        public readonly void Dispose()
        {
        }
    }
}
