using Iommu.Core.Tests.Topology;
using Iommu.Devices;
using Iommu.Domains;
using Iommu.Groups;
using static Iommu.VtD.Tests.Driver.DriverTestKit;

namespace Iommu.VtD.Tests.Driver;

/// <summary>
/// Random topologies on a VT-d platform: every requester ID a device's DMA can carry (its own, its declared
/// DMA aliases, and behind a PCIe-to-PCI bridge the bridge's secondary bus with devfn 00.0, as
/// pci_for_each_dma_alias lists them for domain_context_mapping) must translate through its own group's
/// domain, never another's, through default domains, unmanaged attaches, detaches, re-attaches and hot
/// removal and re-add.
/// </summary>
public sealed class DmaAliasContextPropertyTests
{
    private const ulong Iova = 0x40_0000;
    private const int Runs = 250;

    [Theory]
    [InlineData("Legacy48")]
    [InlineData("Sm48")]
    public void Every_requester_id_of_a_device_reaches_only_its_own_groups_domain(string config)
    {
        for (int seed = 1; seed <= Runs; seed++)
        {
            var rng = new Random(seed);
            PciTopology topo = PciTopology.Generate(rng, aliases: rng.Next(2) == 0);
            using DriverBed f = New(config);
            var world = new World(f, seed);
            foreach (TopoNode n in topo.RandomOrder(rng))
            {
                world.Add(n);
            }

            world.Check("default DMA domains", live: true);

            world.AttachAllUnmanaged();
            world.Check("each group on its own unmanaged domain", live: true);

            // Detach some groups back to their default domains.
            foreach (IommuGroup g in world.Groups().Where(_ => rng.Next(2) == 0))
            {
                f.Iommu.DetachGroup(g.Domain!, g);
            }

            world.Check("after detaching some groups", live: true);

            // Hot removal of a few functions with no present child, then re-adding them.
            var removed = new List<TopoNode>();
            for (int k = rng.Next(1, 4); k > 0; k--)
            {
                var leaves = world.Present.Where(p => !p.Children.Any(world.Present.Contains)).ToList();
                if (leaves.Count == 0)
                {
                    break;
                }

                TopoNode victim = leaves[rng.Next(leaves.Count)];
                world.Remove(victim);
                removed.Add(victim);
                world.Check($"after removing {victim}", live: false);
            }

            removed.Reverse();
            foreach (TopoNode n in removed)
            {
                world.Add(n);
                world.Check($"after re-adding {n}", live: false);
            }

            world.AttachAllUnmanaged();
            world.Check("after re-attaching every group to a fresh unmanaged domain", live: true);
        }
    }

    // The requester IDs 5.15's pci_for_each_dma_alias lists for a device of these topologies.
    private static IEnumerable<ushort> RequesterIds(TopoNode n)
    {
        yield return n.Rid;
        foreach (byte alias in n.Spec.DmaAliases)
        {
            yield return (ushort)((n.Bus << 8) | alias);
        }

        // A PCIe-to-PCI bridge takes ownership of its secondary side's transactions with requester ID
        // (secondary bus, 00.0); the secondary bus is that of the function below it on the path.
        for (TopoNode child = n; child.Parent is { } b; child = b)
        {
            if (b.Spec.IsPcieToPciBridge)
            {
                yield return (ushort)(child.Bus << 8);
            }
        }
    }

    private sealed class World(DriverBed f, int seed)
    {
        private readonly Dictionary<TopoNode, PciDevice> _devices = [];
        private readonly Dictionary<IDomain, ulong> _tags = new(ReferenceEqualityComparer.Instance);
        private readonly HashSet<ushort> _everSeen = [];
        private ulong _nextPage = 0x1_0000_0000;

        public List<TopoNode> Present { get; } = [];

        public void Add(TopoNode n)
        {
            _devices[n] = f.Pci.AddDevice(n.Spec);
            Present.Add(n);
            _everSeen.UnionWith(RequesterIds(n));
        }

        public void Remove(TopoNode n)
        {
            f.Pci.RemoveDevice(_devices[n]);
            _devices.Remove(n);
            Present.Remove(n);
        }

        public List<IommuGroup> Groups() => _devices.Values.Select(d => d.IommuGroup!).Distinct().ToList();

        public void AttachAllUnmanaged()
        {
            foreach (IommuGroup g in Groups())
            {
                if (g.Domain is { Type: DomainType.Unmanaged } old)
                {
                    f.Iommu.DetachGroup(old, g);
                }

                IDomain d = f.Unmanaged();
                Assert.Equal(Errno.None, f.Iommu.AttachGroup(d, g));
            }
        }

        // Every group's current domain maps Iova to a page of its own holding a tag; each requester ID must
        // read a tag of the current domain of a group some present device carrying it belongs to, or fault,
        // and with live, read its group's tag.
        public void Check(string step, bool live)
        {
            foreach (IommuGroup g in Groups())
            {
                Tag(g.Domain!);
            }

            var carriers = new Dictionary<ushort, HashSet<IommuGroup>>();
            foreach ((TopoNode n, PciDevice d) in _devices)
            {
                foreach (ushort rid in RequesterIds(n))
                {
                    if (!carriers.TryGetValue(rid, out HashSet<IommuGroup>? set))
                    {
                        carriers[rid] = set = [];
                    }

                    set.Add(d.IommuGroup!);
                }
            }

            Span<byte> buf = stackalloc byte[8];
            foreach (ushort rid in _everSeen.Order())
            {
                DmaResult r = f.Unit.Read(rid, null, Iova, buf);
                string where = $"seed {seed}, {step}: requester {rid >> 8:x2}:{(rid >> 3) & 0x1f:x2}.{rid & 7}";
                string state = string.Join("; ", Groups().Select(g => $"group {g.Id} on {_tags[g.Domain!]:x}: {string.Join(" ", g.Devices.Select(d => d.Name))}"));
                carriers.TryGetValue(rid, out HashSet<IommuGroup>? groups);
                if (r.IsOk)
                {
                    ulong tag = BitConverter.ToUInt64(buf);
                    Assert.True(groups is not null, $"{where} is carried by no present device but reached a domain (tag {tag:x}): a stale context entry");
                    // A function hot-added to a group attached elsewhere ends on the group's default domain:
                    // 5.15's iommu_probe_device attaches it there after iommu_group_add_device attached it to
                    // the group's domain. Still its own group's domain.
                    Assert.True(groups.Any(g => _tags[g.Domain!] == tag || (g.DefaultDomain is { } dd && _tags.GetValueOrDefault(dd) == tag)), $"{where} reached tag {tag:x}, not its group's domain (groups {string.Join(", ", groups.Select(g => g.Id))}) [{state}]");
                }
                else if (live && groups is { Count: 1 })
                {
                    Assert.Fail($"{where} faulted ({r.Status}, {r.FaultReason}) though its group {groups.First().Id} is attached [{state}]");
                }
            }
        }

        private void Tag(IDomain domain)
        {
            if (_tags.ContainsKey(domain))
            {
                return;
            }

            ulong pa = _nextPage;
            _nextPage += K4;
            ulong tag = 0x7a90_0000_0000_0000 | pa;
            f.Platform.Memory.WriteUInt64(pa, tag);
            Assert.Equal(Errno.None, f.Iommu.Map(domain, Iova, pa, K4, RW));
            _tags[domain] = tag;
        }
    }
}
