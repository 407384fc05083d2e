using System.Globalization;
using Iommu;
using Iommu.Devices;
using Iommu.Memory;

namespace Uacce;

/// <summary>
/// A uacce device (<c>struct uacce_device</c>): a parent's accelerator exposed as <c>/dev/&lt;name&gt;-&lt;id&gt;</c>,
/// each open of which is a <see cref="UacceQueue"/>. Created by <see cref="UacceCore.Alloc"/>.
/// </summary>
[KernelSymbol("struct uacce_device")]
public sealed class UacceDevice
{
    private readonly int[] _qfPageCount = new int[UacceCommands.MaxRegion];

    internal UacceDevice(UacceCore core, Device parent, UacceInterface iface, UacceDeviceFlags flags, uint devId)
    {
        Core = core;
        Parent = parent;
        Ops = iface.Ops;
        Flags = flags;
        DevId = devId;
        Name = string.Create(CultureInfo.InvariantCulture, $"{iface.Name}-{devId}").Replace('/', '!'); // kobject_set_name_vargs
    }

    /// <summary>The framework the device belongs to.</summary>
    public UacceCore Core { get; }

    /// <summary>The device name, <c>&lt;interface name&gt;-&lt;dev_id&gt;</c> with each '/' as '!' (the <c>/dev</c> and sysfs name).</summary>
    public string Name { get; }

    /// <summary>The id (<c>dev_id</c>, the minor number): the lowest free one at allocation.</summary>
    public uint DevId { get; }

    /// <summary>The negotiated flags: <see cref="UacceDeviceFlags.Sva"/> only if the IOMMU enabled IOPF and SVA on the parent.</summary>
    public UacceDeviceFlags Flags { get; }

    /// <summary>The physical device, or null after <see cref="UacceCore.Remove"/>.</summary>
    public Device? Parent { get; private set; }

    /// <summary>The driver callbacks, or null after <see cref="UacceCore.Remove"/>.</summary>
    public IUacceOps? Ops { get; private set; }

    /// <summary>The API version string the driver sets (<c>api_ver</c>, sysfs <c>api</c>).</summary>
    public string Api { get; set; } = string.Empty;

    /// <summary>The algorithms the driver lists (<c>algs</c>, sysfs <c>algorithms</c>).</summary>
    public string Algorithms { get; set; } = string.Empty;

    /// <summary>Whether the character device exists (between <see cref="UacceCore.Register"/> and <see cref="UacceCore.Remove"/>).</summary>
    public bool Registered { get; internal set; }

    /// <summary>Whether <see cref="UacceCore.Remove"/> ran.</summary>
    public bool Removed { get; private set; }

    /// <summary>The open queues (<c>uacce-&gt;queues</c>), zombies included until their files are released.</summary>
    public IReadOnlyList<UacceQueue> Queues
    {
        get
        {
            lock (Mutex)
            {
                return [.. QueueList];
            }
        }
    }

    /// <summary>The sysfs attributes present now, in the kernel's order (region sizes are hidden while 0); none before <see cref="UacceCore.Register"/> or after <see cref="UacceCore.Remove"/>.</summary>
    public IReadOnlyList<string> Attributes
    {
        get
        {
            // The directory exists from uacce_register (cdev_device_add → device_add) until uacce_remove.
            if (!Registered)
            {
                return [];
            }

            var names = new List<string> { "api", "flags", "available_instances", "algorithms" };
            if (_qfPageCount[(int)UacceQueueFileRegionType.Mmio] != 0)
            {
                names.Add("region_mmio_size");
            }

            if (_qfPageCount[(int)UacceQueueFileRegionType.Dus] != 0)
            {
                names.Add("region_dus_size");
            }

            return names;
        }
    }

    internal Lock Mutex { get; } = new();

    internal List<UacceQueue> QueueList { get; } = [];

    /// <summary>Sets how many pages a region of each queue has (<c>qf_pg_num[type]</c>), shown as <c>region_*_size</c>.</summary>
    /// <param name="type">The region type.</param>
    /// <param name="pages">Pages, 0 hides the attribute.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="type"/> is not a region type or <paramref name="pages"/> is negative.</exception>
    [KernelSymbol("uacce_device.qf_pg_num")]
    public void SetRegionPageCount(UacceQueueFileRegionType type, int pages)
    {
        if ((uint)type >= UacceCommands.MaxRegion)
        {
            throw new ArgumentOutOfRangeException(nameof(type), type, "uacce has MMIO and DUS regions only");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(pages);
        _qfPageCount[(int)type] = pages;
    }

    /// <summary>Reads a sysfs attribute of <c>/sys/class/uacce/&lt;name&gt;/</c>.</summary>
    /// <param name="attribute"><c>api</c>, <c>flags</c>, <c>available_instances</c>, <c>algorithms</c>, <c>region_mmio_size</c> or <c>region_dus_size</c>.</param>
    /// <param name="text">The text with its newline, or null.</param>
    /// <returns>0; -ENOENT for an unknown or hidden attribute, before registration or after removal (no directory); -ENODEV for <c>available_instances</c> when the driver has no <see cref="IUacceAvailableInstancesOps"/>.</returns>
    /// <exception cref="ObjectDisposedException">The platform is disposed.</exception>
    public Errno ReadAttribute(string attribute, out string? text)
    {
        using PhysicalMemory.AccessScope guard = Core.Platform.Memory.EnterAccess();
        ArgumentNullException.ThrowIfNull(attribute);
        text = null;
        bool visible = false;
        foreach (string a in Attributes)
        {
            visible |= a == attribute;
        }

        if (!visible)
        {
            return ErrorDetail.Fail(Errno.ENOENT, $"/sys/class/uacce/{Name}/{attribute} does not exist");
        }

        CultureInfo inv = CultureInfo.InvariantCulture;
        switch (attribute)
        {
            case "api":
                text = Api + "\n";
                break;
            case "flags":
                text = ((uint)Flags).ToString(inv) + "\n";
                break;
            case "available_instances":
                if (Ops is not IUacceAvailableInstancesOps avail)
                {
                    return ErrorDetail.Fail(Errno.ENODEV, $"{Name}'s driver does not count instances");
                }

                text = avail.GetAvailableInstances(this).ToString(inv) + "\n";
                break;
            case "algorithms":
                text = Algorithms + "\n";
                break;
            case "region_mmio_size":
                text = ((ulong)_qfPageCount[0] * UacceCore.PageSize).ToString(inv) + "\n";
                break;
            default:
                text = ((ulong)_qfPageCount[1] * UacceCore.PageSize).ToString(inv) + "\n";
                break;
        }

        return Errno.None;
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    internal void Detach()
    {
        Registered = false;
        Removed = true;
        Ops = null;
        Parent = null;
    }
}
