using Iommu.Memory;
using Iommu;
using Iommu.Devices;
using Vfio.Mdev.Internal;

namespace Vfio.Mdev;

/// <summary>
/// A registered parent device (<c>struct mdev_parent</c>): the physical device, its vendor ops, its
/// supported types (<c>mdev_supported_types/</c>) and the mdevs created under it.
/// </summary>
/// <remarks>
/// Thread safety: listings are snapshots. Creation and removal of children hold
/// <c>unreg_sem</c> for read with a trylock; unregistration holds it for write, so a create or remove
/// that races with unregistration fails with -ENODEV instead of waiting.
/// </remarks>
[KernelSymbol("struct mdev_parent")]
public sealed class MdevParent
{
    private readonly List<MdevDevice> _children = [];
    private readonly MdevType[] _types;

    internal MdevParent(MdevCore core, Device device, IMdevParentOps ops, IReadOnlyList<MdevTypeGroup> groups)
    {
        Core = core;
        Device = device;
        Ops = ops;
        _types = new MdevType[groups.Count];
        for (int i = 0; i < groups.Count; i++)
        {
            _types[i] = new MdevType(this, i, groups[i]);
        }
    }

    /// <summary>The mdev core the parent is registered with (its platform is the one the guards check).</summary>
    internal MdevCore Core { get; }

    /// <summary>The physical parent device.</summary>
    public Device Device { get; }

    /// <summary>The vendor driver.</summary>
    public IMdevParentOps Ops { get; }

    /// <summary>The supported types, in the vendor's group order (the entries of <c>mdev_supported_types/</c>).</summary>
    public IReadOnlyList<MdevType> SupportedTypes => _types;

    /// <summary>Whether the parent is registered and not being unregistered.</summary>
    public bool IsRegistered => SysfsPresent && !Unregistering;

    /// <summary>The mdevs created under this parent and not yet removed.</summary>
    public IReadOnlyList<MdevDevice> Children
    {
        get
        {
            lock (_children)
            {
                return [.. _children];
            }
        }
    }

    internal RwSemaphore UnregSem { get; } = new();

    internal bool SysfsPresent { get; set; } = true;

    internal bool Unregistering { get; set; }

    /// <summary>The type named <paramref name="name"/> (a directory of <c>mdev_supported_types/</c>), or null.</summary>
    /// <param name="name">Full type name, e.g. <c>mtty-1</c>.</param>
    /// <returns>The type or null.</returns>
    public MdevType? FindType(string name)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        foreach (MdevType t in _types)
        {
            if (t.Name == name)
            {
                return t;
            }
        }

        return null;
    }

    /// <inheritdoc/>
    public override string ToString() => Device.Name;

    internal void AddChild(MdevDevice mdev)
    {
        lock (_children)
        {
            _children.Add(mdev);
        }
    }

    internal void RemoveChild(MdevDevice mdev)
    {
        lock (_children)
        {
            _children.Remove(mdev);
        }
    }
}
