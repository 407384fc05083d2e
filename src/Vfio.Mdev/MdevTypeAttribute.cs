using Iommu;

namespace Vfio.Mdev;

/// <summary>A read-only attribute in a type's sysfs directory (<c>struct mdev_type_attribute</c>).</summary>
/// <param name="Name">File name, e.g. <c>available_instances</c>.</param>
/// <param name="Show">Produces the content.</param>
[KernelSymbol("struct mdev_type_attribute")]
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1711", Justification = "Mirrors struct mdev_type_attribute; it is a sysfs attribute, not a .NET attribute.")]
public sealed record MdevTypeAttribute(string Name, MdevTypeAttributeShow Show);
