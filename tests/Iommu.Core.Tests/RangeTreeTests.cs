using CsCheck;
using Iommu.Internal;

namespace Iommu.Core.Tests;

/// <summary>
/// The range tree of IOVA domains and type1 containers against a sorted dictionary: after any sequence
/// of inserts and removals the red-black invariants hold, in-order and reverse walks (rb_next /
/// rb_prev) and the enumerator give exactly the live ranges, floor and first-ending-after searches
/// answer as a scan would, and a node keeps its index while others come and go.
/// </summary>
public sealed class RangeTreeTests
{
    [Fact]
    public void Any_sequence_of_inserts_and_removals_keeps_the_invariants_the_order_and_the_indices()
    {
        // (key, insert?) pairs: keys from a small range so that removals hit live nodes often.
        Gen.Select(Gen.ULong[0, 133].Select(k => k * 3), Gen.Int[0, 2]).Array[1, 600]
            .Sample(ops =>
            {
                var tree = new RangeTree<ulong>();
                var model = new SortedDictionary<ulong, int>(); // key -> node index
                foreach ((ulong key, int kind) in ops)
                {
                    if (model.TryGetValue(key, out int node))
                    {
                        if (kind != 0)
                        {
                            Assert.Equal(key, tree[node].Lo); // nothing moved it
                            tree.Remove(node);
                            model.Remove(key);
                        }
                    }
                    else
                    {
                        model[key] = tree.Insert(key, key + 1, key * 3);
                    }
                }

                Assert.Null(tree.Validate());
                Assert.Equal(model.Count, tree.Count);
                var forward = new List<ulong>();
                int last = RangeTree<ulong>.Nil;
                for (int n = tree.First(); n != RangeTree<ulong>.Nil; n = tree.Next(n))
                {
                    forward.Add(tree[n].Lo);
                    last = n;
                }

                Assert.Equal(model.Keys, forward);
                var backward = new List<ulong>();
                for (int n = last; n != RangeTree<ulong>.Nil; n = tree.Prev(n))
                {
                    backward.Add(tree[n].Lo);
                }

                forward.Reverse();
                Assert.Equal(forward, backward);
                foreach ((ulong key, int node) in model)
                {
                    Assert.Equal(key, tree[node].Lo);
                }

                Assert.Equal(model.Keys.Select(k => k * 3), tree);

                // Ranges are [k, k + 1]: keys 3 apart keep them disjoint; probe every key around them.
                for (ulong probe = 0; probe <= 402; probe++)
                {
                    ulong? floor = model.Keys.Where(k => k <= probe).Select(k => (ulong?)k).LastOrDefault();
                    int f = tree.Floor(probe);
                    Assert.Equal(floor, f == RangeTree<ulong>.Nil ? null : tree[f].Lo);
                    ulong? ending = model.Keys.Where(k => k + 1 >= probe).Select(k => (ulong?)k).FirstOrDefault();
                    int e = tree.FirstEndingAtOrAfter(probe);
                    Assert.Equal(ending, e == RangeTree<ulong>.Nil ? null : tree[e].Lo);
                }
            });
    }

    [Fact]
    public void Ascending_and_descending_runs_stay_balanced()
    {
        // The DMA API allocates top-down and frees in any order: long monotonic runs are the common case.
        var tree = new RangeTree<ulong>();
        var nodes = new List<int>();
        for (ulong k = 100_000; k > 0; k--)
        {
            nodes.Add(tree.Insert(k, k, k));
        }

        Assert.Null(tree.Validate());
        for (int i = 0; i < nodes.Count; i += 2)
        {
            tree.Remove(nodes[i]);
        }

        Assert.Null(tree.Validate());
        Assert.Equal(50_000, tree.Count);
    }

    [Fact]
    public void Validate_reports_a_broken_tree()
    {
        // The checker itself must be able to fail: a node whose key breaks the order.
        var tree = new RangeTree<ulong>();
        int a = tree.Insert(10, 10, 0);
        tree.Insert(20, 20, 0);
        tree.Insert(5, 5, 0);
        Assert.Null(tree.Validate());
        tree[a].Lo = 30;
        Assert.NotNull(tree.Validate());
    }
}
