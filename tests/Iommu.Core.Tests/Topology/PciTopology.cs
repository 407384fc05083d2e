using Iommu.Devices;

namespace Iommu.Core.Tests.Topology;

/// <summary>One function of a generated topology, with the parent it sits behind.</summary>
internal sealed class TopoNode(PciDeviceSpec spec, TopoNode? parent)
{
    public PciDeviceSpec Spec { get; } = spec;

    public TopoNode? Parent { get; } = parent;

    public List<TopoNode> Children { get; } = [];

    public byte Bus => Spec.Address.Bus;

    public byte DevFn => Spec.Address.DevFn;

    public ushort Rid => Spec.Address.RequesterId;

    public override string ToString() => Spec.Address.ToString();
}

/// <summary>
/// Random PCI topologies of segment 0: root-complex endpoints (multifunction or not, ACS or not), root
/// ports leading to endpoints, to switches (upstream port, downstream ports) or to PCIe-to-PCI bridges with
/// conventional PCI devices behind, and DMA alias declarations. Every bridge gets its own secondary bus, so a
/// device's bus number is its parent's secondary bus, as enumeration would number them.
/// </summary>
internal sealed class PciTopology
{
    private readonly Random _rng;
    private int _nextBus = 1;

    private PciTopology(Random rng) => _rng = rng;

    /// <summary>All functions, parents before children.</summary>
    public List<TopoNode> Nodes { get; } = [];

    public static PciTopology Generate(Random rng, bool aliases)
    {
        var t = new PciTopology(rng);
        int dev = 2;
        for (int i = rng.Next(0, 3); i > 0; i--)
        {
            t.Slot(0, dev++, null);
        }

        int ports = rng.Next(1, 4);
        for (int p = 0; p < ports; p++)
        {
            // A root port slot, sometimes with two functions (two ports).
            int fns = rng.Next(4) == 0 ? 2 : 1;
            for (int f = 0; f < fns; f++)
            {
                TopoNode port = t.Add(0, 0x1c + p, f, null, bridge: true, acs: rng.Next(10) < 7, mf: fns > 1);
                t.BelowPort(port);
            }
        }

        if (aliases)
        {
            t.AddAliases();
        }

        return t;
    }

    /// <summary>A random order of <see cref="Nodes"/> with every parent before its children.</summary>
    public List<TopoNode> RandomOrder(Random rng)
    {
        var order = new List<TopoNode>();
        var ready = Nodes.Where(n => n.Parent is null).ToList();
        while (ready.Count > 0)
        {
            int i = rng.Next(ready.Count);
            TopoNode n = ready[i];
            ready.RemoveAt(i);
            order.Add(n);
            ready.AddRange(n.Children);
        }

        return order;
    }

    private void BelowPort(TopoNode port)
    {
        int bus = _nextBus++;
        switch (_rng.Next(3))
        {
            case 0:
                for (int i = _rng.Next(1, 3); i > 0; i--)
                {
                    Slot(bus, i - 1, port);
                }

                break;
            case 1:
            {
                TopoNode up = Add(bus, 0, 0, port, bridge: true, acs: _rng.Next(10) < 8, mf: false);
                int internalBus = _nextBus++;
                for (int d = _rng.Next(1, 4) - 1; d >= 0; d--)
                {
                    TopoNode down = Add(internalBus, d, 0, up, bridge: true, acs: _rng.Next(10) < 6, mf: false);
                    int leafBus = _nextBus++;
                    if (_rng.Next(4) == 0)
                    {
                        PcieToPci(leafBus, down);
                    }
                    else
                    {
                        Slot(leafBus, 0, down);
                    }
                }

                break;
            }

            default:
                PcieToPci(bus, port);
                break;
        }
    }

    private void PcieToPci(int bus, TopoNode port)
    {
        // Conventional PCI has no ACS (pci_acs_enabled is false for non-PCIe functions and for the
        // PCIe-to-PCI bridge itself).
        TopoNode bridge = Add(bus, 0, 0, port, bridge: false, acs: false, mf: false, pcieToPci: true);
        int sec = _nextBus++;
        var used = new HashSet<int>();
        for (int i = _rng.Next(1, 4); i > 0; i--)
        {
            int d = _rng.Next(0, 8);
            if (!used.Add(d))
            {
                continue;
            }

            bool mf = _rng.Next(3) == 0;
            for (int f = 0; f < (mf ? 2 : 1); f++)
            {
                Add(sec, d, f, bridge, bridge: false, acs: false, mf: mf);
            }
        }
    }

    private void Slot(int bus, int dev, TopoNode? parent)
    {
        bool mf = _rng.Next(3) == 0;
        int fns = mf ? _rng.Next(2, 4) : 1;
        for (int f = 0; f < fns; f++)
        {
            Add(bus, dev, f, parent, bridge: false, acs: _rng.Next(2) == 0, mf: mf);
        }
    }

    private TopoNode Add(int bus, int dev, int fn, TopoNode? parent, bool bridge, bool acs, bool mf, bool pcieToPci = false)
    {
        var spec = new PciDeviceSpec(new PciAddress(0, (byte)bus, (byte)dev, (byte)fn))
        {
            IsBridge = bridge,
            IsPcieToPciBridge = pcieToPci,
            Acs = acs,
            Multifunction = mf,
            Upstream = parent?.Spec.Address,
        };
        var node = new TopoNode(spec, parent);
        parent?.Children.Add(node);
        Nodes.Add(node);
        return node;
    }

    // Some endpoints declare a DMA alias (pci_add_dma_alias quirk): another function of their bus, or a devfn
    // no function of the bus has.
    private void AddAliases()
    {
        for (int i = 0; i < Nodes.Count; i++)
        {
            TopoNode n = Nodes[i];
            if (n.Spec.IsBridge || n.Spec.IsPcieToPciBridge || _rng.Next(4) != 0)
            {
                continue;
            }

            var sameBus = Nodes.Where(o => o != n && o.Bus == n.Bus).ToList();
            byte alias = sameBus.Count > 0 && _rng.Next(3) != 0
                ? sameBus[_rng.Next(sameBus.Count)].DevFn
                : (byte)((0x18 + _rng.Next(8)) << 3);
            var replaced = new TopoNode(n.Spec with { DmaAliases = [alias] }, n.Parent);
            Replace(n, replaced);
        }
    }

    private void Replace(TopoNode old, TopoNode replacement)
    {
        // Endpoints have no children, so only the list and the parent's child list change.
        Nodes[Nodes.IndexOf(old)] = replacement;
        if (old.Parent is { } p)
        {
            p.Children[p.Children.IndexOf(old)] = replacement;
        }
    }
}

/// <summary>
/// 5.15's pci_device_group transcribed onto <see cref="TopoNode"/>s, with the devices in the order the
/// kernel's for_each_pci_dev walks them (the order they were added). The spec's Acs flag stands for
/// pci_acs_enabled(REQ_ACS_FLAGS).
/// </summary>
internal sealed class ReferenceGrouping
{
    private readonly List<TopoNode> _present = [];
    private readonly Dictionary<TopoNode, RefGroup> _group = [];

    private sealed class RefGroup
    {
        public HashSet<TopoNode> Members { get; } = [];
    }

    public void Add(TopoNode n)
    {
        _present.Add(n);
        RefGroup g = PciDeviceGroup(n);
        g.Members.Add(n);
        _group[n] = g;
    }

    public void Remove(TopoNode n)
    {
        _present.Remove(n);
        _group[n].Members.Remove(n);
        _group.Remove(n);
    }

    /// <summary>The partition as sorted text, one group per line.</summary>
    public string Partition() => Describe(_group.Values.Distinct().Select(g => g.Members.Select(m => m.ToString())));

    public static string Describe(IEnumerable<IEnumerable<string>> groups) =>
        string.Join("\n", groups.Select(g => "{" + string.Join(" ", g.Order(StringComparer.Ordinal)) + "}").Order(StringComparer.Ordinal));

    private RefGroup? Get(TopoNode n) => _group.GetValueOrDefault(n);

    private RefGroup PciDeviceGroup(TopoNode n)
    {
        // pci_for_each_dma_alias(get_pci_alias_or_group): the device (its dma_alias_mask entries call back
        // with the same pdev), then each bus's bridge: root and switch ports are skipped, a PCIe-to-PCI bridge
        // is visited. The last visited function is where the group search goes on.
        TopoNode pdev = n;
        if (Get(n) is { } own)
        {
            return own;
        }

        for (TopoNode? b = n.Parent; b is not null; b = b.Parent)
        {
            if (!b.Spec.IsPcieToPciBridge)
            {
                continue;
            }

            pdev = b;
            if (Get(b) is { } g)
            {
                return g;
            }
        }

        for (TopoNode? b = pdev.Parent; b is not null; b = b.Parent)
        {
            if (AcsPathEnabled(b))
            {
                break;
            }

            pdev = b;
            if (Get(b) is { } g)
            {
                return g;
            }
        }

        var devfns = new bool[256];
        return AliasGroup(pdev, devfns) ?? FunctionAliasGroup(pdev, devfns) ?? new RefGroup();
    }

    private static bool AcsPathEnabled(TopoNode start)
    {
        for (TopoNode? d = start; d is not null; d = d.Parent)
        {
            if (!d.Spec.Acs)
            {
                return false;
            }
        }

        return true;
    }

    private static bool AreDmaAliases(TopoNode a, TopoNode b) => a.Spec.DmaAliases.Contains(b.DevFn) || b.Spec.DmaAliases.Contains(a.DevFn);

    private RefGroup? FunctionAliasGroup(TopoNode pdev, bool[] devfns)
    {
        if (!pdev.Spec.Multifunction || pdev.Spec.Acs)
        {
            return null;
        }

        foreach (TopoNode tmp in _present.ToList())
        {
            if (tmp == pdev || tmp.Bus != pdev.Bus || tmp.Spec.Address.Device != pdev.Spec.Address.Device || tmp.Spec.Acs)
            {
                continue;
            }

            if (AliasGroup(tmp, devfns) is { } g)
            {
                return g;
            }
        }

        return null;
    }

    private RefGroup? AliasGroup(TopoNode pdev, bool[] devfns)
    {
        if (devfns[pdev.DevFn])
        {
            return null;
        }

        devfns[pdev.DevFn] = true;
        if (Get(pdev) is { } own)
        {
            return own;
        }

        foreach (TopoNode tmp in _present.ToList())
        {
            if (tmp == pdev || tmp.Bus != pdev.Bus || !AreDmaAliases(pdev, tmp))
            {
                continue;
            }

            if ((AliasGroup(tmp, devfns) ?? FunctionAliasGroup(tmp, devfns)) is { } g)
            {
                return g;
            }
        }

        return null;
    }
}
