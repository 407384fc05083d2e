using Iommu;

namespace Vfio.Mdev;

/// <summary>
/// One entry of <c>supported_type_groups</c> (a named <c>struct attribute_group</c>): the group's name
/// becomes the type name <c>"&lt;driver&gt;-&lt;name&gt;"</c>, its attributes the files of the type's directory.
/// </summary>
[KernelSymbol("struct attribute_group")]
public sealed class MdevTypeGroup
{
    /// <summary>Declares a type group.</summary>
    /// <param name="name">The group name (null makes registration fail with -EINVAL, as in the kernel; "" names the type <c>"&lt;driver&gt;-"</c>).</param>
    /// <param name="attributes">The type's attributes.</param>
    public MdevTypeGroup(string? name, IReadOnlyList<MdevTypeAttribute> attributes)
    {
        ArgumentNullException.ThrowIfNull(attributes);
        Name = name;
        Attributes = attributes;
    }

    /// <summary>The group name.</summary>
    public string? Name { get; }

    /// <summary>The attributes.</summary>
    public IReadOnlyList<MdevTypeAttribute> Attributes { get; }

    /// <summary>
    /// A group with the conventional attributes: <c>name</c> (when <paramref name="displayName"/> is
    /// given), <c>available_instances</c>, <c>device_api</c> and <c>description</c> (when given).
    /// Each value is written with a trailing newline, as the kernel's <c>sprintf(buf, "%s\n", …)</c>.
    /// </summary>
    /// <param name="name">The group name.</param>
    /// <param name="availableInstances">How many more instances can be created now.</param>
    /// <param name="deviceApi">The VFIO device API string, e.g. <c>vfio-pci</c>.</param>
    /// <param name="displayName">Human-readable name, or null for no <c>name</c> attribute.</param>
    /// <param name="description">Description, or null for no <c>description</c> attribute.</param>
    /// <returns>The group.</returns>
    public static MdevTypeGroup Conventional(string name, Func<MdevType, int> availableInstances, string deviceApi, string? displayName = null, string? description = null)
    {
        ArgumentNullException.ThrowIfNull(availableInstances);
        var attrs = new List<MdevTypeAttribute>();
        if (displayName is not null)
        {
            attrs.Add(new MdevTypeAttribute("name", _ => displayName + "\n"));
        }

        attrs.Add(new MdevTypeAttribute("available_instances", t => availableInstances(t).ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n"));
        attrs.Add(new MdevTypeAttribute("device_api", _ => deviceApi + "\n"));
        if (description is not null)
        {
            attrs.Add(new MdevTypeAttribute("description", _ => description + "\n"));
        }

        return new MdevTypeGroup(name, attrs);
    }
}
