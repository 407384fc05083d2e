using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// A base for vendor drivers: write <see cref="DriverName"/>, <see cref="SupportedTypeGroups"/>,
/// <see cref="Create"/> and <see cref="Remove"/>, and override only the optional callbacks the device
/// has. <see cref="Callbacks"/> is worked out from which of them are overridden, so a callback left
/// alone is absent exactly as a NULL member of <c>struct mdev_parent_ops</c> is.
/// </summary>
/// <remarks>
/// <para>What the mdev core does for a callback that is not overridden (as for a clear
/// <see cref="MdevParentCallbacks"/> bit on <see cref="IMdevParentOps"/>): opening the device file
/// succeeds without <c>open_device</c>, closing it calls nothing; <c>read</c>, <c>write</c> and
/// <c>mmap</c> fail with -EINVAL; <c>ioctl</c> returns 0; unregistering with files open waits without
/// <c>request</c>, logging once.</para>
/// <para>The base implementations of the optional callbacks are never called by the core; called
/// directly they throw <see cref="NotSupportedException"/>.</para>
/// <para>Thread safety: as <see cref="IMdevParentOps"/>; the base holds no state besides
/// <see cref="Callbacks"/>, fixed at construction.</para>
/// </remarks>
public abstract class MdevParentOpsBase : IMdevParentOps
{
    /// <summary>Works out <see cref="Callbacks"/> from the overrides of the derived driver.</summary>
    protected MdevParentOpsBase()
    {
        Type t = GetType();
        MdevParentCallbacks c = MdevParentCallbacks.Create | MdevParentCallbacks.Remove;
        c |= Overrides(t, nameof(OpenDevice), typeof(IMdevDevice)) ? MdevParentCallbacks.OpenDevice : 0;
        c |= Overrides(t, nameof(CloseDevice), typeof(IMdevDevice)) ? MdevParentCallbacks.CloseDevice : 0;
        c |= Overrides(t, nameof(Read), typeof(IMdevDevice), typeof(Span<byte>), typeof(long)) ? MdevParentCallbacks.Read : 0;
        c |= Overrides(t, nameof(Write), typeof(IMdevDevice), typeof(ReadOnlySpan<byte>), typeof(long)) ? MdevParentCallbacks.Write : 0;
        c |= Overrides(t, nameof(Ioctl), typeof(IMdevDevice), typeof(uint), typeof(Span<byte>)) ? MdevParentCallbacks.Ioctl : 0;
        c |= Overrides(t, nameof(Mmap), typeof(IMdevDevice), typeof(VmArea)) ? MdevParentCallbacks.Mmap : 0;
        c |= Overrides(t, nameof(Request), typeof(IMdevDevice), typeof(uint)) ? MdevParentCallbacks.Request : 0;
        Callbacks = c;
    }

    /// <summary><c>create</c>, <c>remove</c> and every optional callback the derived driver overrides.</summary>
    public MdevParentCallbacks Callbacks { get; }

    /// <inheritdoc/>
    public abstract string DriverName { get; }

    /// <inheritdoc/>
    public abstract IReadOnlyList<MdevTypeGroup>? SupportedTypeGroups { get; }

    /// <inheritdoc/>
    public abstract Errno Create(IMdevDevice mdev);

    /// <inheritdoc/>
    public abstract Errno Remove(IMdevDevice mdev);

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, opening the device file succeeds and nothing is called.</remarks>
    public virtual Errno OpenDevice(IMdevDevice mdev) => throw Absent("open_device");

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, the last close calls nothing.</remarks>
    public virtual void CloseDevice(IMdevDevice mdev) => throw Absent("close_device");

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, a read of the device file fails with -EINVAL.</remarks>
    public virtual long Read(IMdevDevice mdev, Span<byte> buffer, long offset) => throw Absent("read");

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, a write of the device file fails with -EINVAL.</remarks>
    public virtual long Write(IMdevDevice mdev, ReadOnlySpan<byte> buffer, long offset) => throw Absent("write");

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, a device ioctl returns 0 (5.15's <c>vfio_mdev_unlocked_ioctl</c>).</remarks>
    public virtual long Ioctl(IMdevDevice mdev, uint cmd, Span<byte> arg) => throw Absent("ioctl");

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, an mmap of the device file fails with -EINVAL.</remarks>
    public virtual Errno Mmap(IMdevDevice mdev, VmArea vma) => throw Absent("mmap");

    /// <inheritdoc/>
    /// <remarks>Optional: without an override, unregistering waits for the files to close without asking.</remarks>
    public virtual void Request(IMdevDevice mdev, uint count) => throw Absent("request");

    private static bool Overrides(Type t, string name, params Type[] parameters) =>
        t.GetMethod(name, parameters)?.DeclaringType != typeof(MdevParentOpsBase);

    private NotSupportedException Absent(string op) =>
        new($"vendor driver {DriverName} has no mdev_parent_ops.{op}; the mdev core does not call it (Callbacks lacks it)");
}
