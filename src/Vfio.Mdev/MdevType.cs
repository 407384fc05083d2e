using Iommu.Memory;
using Iommu;
using Iommu.Devices;

namespace Vfio.Mdev;

/// <summary>
/// A type a parent can create (<c>struct mdev_type</c>): the directory
/// <c>/sys/&lt;parent&gt;/mdev_supported_types/&lt;driver&gt;-&lt;group&gt;/</c> with the vendor's
/// attributes, the write-only <c>create</c> file and the <c>devices/</c> directory.
/// </summary>
/// <remarks>Thread safety: all members may be called concurrently; listings are snapshots.</remarks>
[KernelSymbol("struct mdev_type")]
public sealed class MdevType
{
    private readonly List<MdevDevice> _devices = [];

    internal MdevType(MdevParent parent, int groupId, MdevTypeGroup group)
    {
        Parent = parent;
        TypeGroupId = groupId;
        Group = group;
        GroupName = group.Name!;
        Name = $"{parent.Ops.DriverName}-{GroupName}";
    }

    /// <summary>The type name (the kobject name <c>"&lt;driver&gt;-&lt;group&gt;"</c>), e.g. <c>mtty-2</c>.</summary>
    public string Name { get; }

    /// <summary>The group name the vendor declared, e.g. <c>2</c>.</summary>
    public string GroupName { get; }

    /// <summary>Index of the type's group in the parent's <c>supported_type_groups</c> (<c>mtype_get_type_group_id</c>).</summary>
    [KernelSymbol("mtype_get_type_group_id")]
    public int TypeGroupId { get; }

    /// <summary>The parent.</summary>
    public MdevParent Parent { get; }

    /// <summary>The parent's physical device (<c>mtype_get_parent_dev</c>).</summary>
    [KernelSymbol("mtype_get_parent_dev")]
    public Device ParentDevice => Parent.Device;

    /// <summary>The vendor's group.</summary>
    public MdevTypeGroup Group { get; }

    /// <summary>The mdevs of this type (the <c>devices/</c> directory), in creation order.</summary>
    public IReadOnlyList<MdevDevice> Devices
    {
        get
        {
            lock (_devices)
            {
                return [.. _devices];
            }
        }
    }

    /// <summary>The entries of the type's directory, sorted as <c>ls</c> would: the vendor's attributes, <c>create</c> and <c>devices</c>.</summary>
    /// <returns>File names.</returns>
    public IReadOnlyList<string> ListDirectory()
    {
        using PhysicalMemory.AccessScope guard = Parent.Core.Platform.Memory.EnterAccess();
        var names = new List<string> { "create", "devices" };
        foreach (MdevTypeAttribute a in Group.Attributes)
        {
            names.Add(a.Name);
        }

        names.Sort(StringComparer.Ordinal);
        return names;
    }

    /// <summary>Reads one of the type's attribute files (<c>cat .../&lt;type&gt;/&lt;attribute&gt;</c>).</summary>
    /// <param name="attribute">File name, e.g. <c>available_instances</c>.</param>
    /// <param name="value">The content (with its trailing newline), or empty on error.</param>
    /// <returns>0; -EACCES for the write-only <c>create</c>; -ENOENT for a file the type does not have or once the parent is unregistered.</returns>
    public Errno ReadAttribute(string attribute, out string value)
    {
        using PhysicalMemory.AccessScope guard = Parent.Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(attribute);
        value = string.Empty;
        if (!Parent.SysfsPresent)
        {
            return ErrorDetail.Fail(Errno.ENOENT, $"{Parent.Device.Name} is no longer registered; {Name}/{attribute} is gone");
        }

        if (attribute == "create")
        {
            return ErrorDetail.Fail(Errno.EACCES, $"{Name}/create is write-only");
        }

        foreach (MdevTypeAttribute a in Group.Attributes)
        {
            if (a.Name == attribute)
            {
                value = a.Show(this);
                return Errno.None;
            }
        }

        return ErrorDetail.Fail(Errno.ENOENT, $"type {Name} of {Parent.Device.Name} has no attribute '{attribute}'");
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    internal void AddDevice(MdevDevice mdev)
    {
        lock (_devices)
        {
            _devices.Add(mdev);
        }
    }

    internal void RemoveDevice(MdevDevice mdev)
    {
        lock (_devices)
        {
            _devices.Remove(mdev);
        }
    }
}
