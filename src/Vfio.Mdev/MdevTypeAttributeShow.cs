namespace Vfio.Mdev;

/// <summary>Produces the text of a type attribute (the <c>show</c> of a <c>struct mdev_type_attribute</c>).</summary>
/// <param name="type">The type being read.</param>
/// <returns>The file content, conventionally ending with a newline.</returns>
public delegate string MdevTypeAttributeShow(MdevType type);
