using Iommu;

namespace Uacce;

/// <summary>What a driver asks for in <see cref="UacceCore.Alloc"/> (<c>struct uacce_interface</c>).</summary>
/// <param name="Name">Device name prefix; the device is <c>&lt;Name&gt;-&lt;dev_id&gt;</c>, each '/' shown as '!'. Fewer than <see cref="UacceCommands.MaxNameSize"/> characters (the kernel's array holds the terminating NUL).</param>
/// <param name="Flags">Requested capabilities; <see cref="UacceDeviceFlags.Sva"/> survives only if the IOMMU grants it (read <see cref="UacceDevice.Flags"/> back).</param>
/// <param name="Ops">The driver callbacks.</param>
[KernelSymbol("struct uacce_interface")]
public sealed record UacceInterface(string Name, UacceDeviceFlags Flags, IUacceOps Ops);
