using CsCheck;
using Iommu.Dma;

namespace Iommu.Core.Tests;

/// <summary>
/// The IOVA domain's red-black tree against a sorted dictionary: after any sequence of inserts and
/// removals the red-black invariants hold, in-order and reverse walks (rb_next / rb_prev) give exactly
/// the live ranges, and a node keeps its index while others come and go.
/// </summary>
public sealed class IovaTreeTests
{
    [Fact]
    public void Any_sequence_of_inserts_and_removals_keeps_the_invariants_the_order_and_the_indices()
    {
        // (key, insert?) pairs: keys from a small range so that removals hit live nodes often.
        Gen.Select(Gen.ULong[0, 400], Gen.Int[0, 2]).Array[1, 600]
            .Sample(ops =>
            {
                var tree = new IovaTree();
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
                        model[key] = tree.Insert(key, key, 1, IovaState.Live);
                    }
                }

                Assert.Null(tree.Validate());
                Assert.Equal(model.Count, tree.Count);
                var forward = new List<ulong>();
                int last = IovaTree.Nil;
                for (int n = tree.First(); n != IovaTree.Nil; n = tree.Next(n))
                {
                    forward.Add(tree[n].Lo);
                    last = n;
                }

                Assert.Equal(model.Keys, forward);
                var backward = new List<ulong>();
                for (int n = last; n != IovaTree.Nil; n = tree.Prev(n))
                {
                    backward.Add(tree[n].Lo);
                }

                forward.Reverse();
                Assert.Equal(forward, backward);
                foreach ((ulong key, int node) in model)
                {
                    Assert.Equal(key, tree[node].Lo);
                }
            });
    }

    [Fact]
    public void Ascending_and_descending_runs_stay_balanced()
    {
        // The DMA API allocates top-down and frees in any order: long monotonic runs are the common case.
        var tree = new IovaTree();
        var nodes = new List<int>();
        for (ulong k = 100_000; k > 0; k--)
        {
            nodes.Add(tree.Insert(k, k, 1, IovaState.Live));
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
        var tree = new IovaTree();
        int a = tree.Insert(10, 10, 1, IovaState.Live);
        tree.Insert(20, 20, 1, IovaState.Live);
        tree.Insert(5, 5, 1, IovaState.Live);
        Assert.Null(tree.Validate());
        tree[a].Lo = 30;
        Assert.NotNull(tree.Validate());
    }
}
